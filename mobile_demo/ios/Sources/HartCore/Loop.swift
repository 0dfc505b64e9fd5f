// The generation loop, step for step hart/loop.py (manifest `loop`) and `generate` in
// mobile_demo/web/hart_runtime.mjs, on plain Tensors: text -> condition -> one step per scale (the KV
// cache is the runner's step state) -> guidance mix -> sampling with the portable RNG -> update per
// scale -> residual head -> final update -> decoder. No Core ML here: CoreMLRunner runs the export, the
// golden-trace test (Tests/HartCoreTests) runs a fake that answers from the recorded trace.
import Foundation

/// The graphs of an export, other than the per-scale transformer step.
public enum Graph: Hashable, Sendable, CustomStringConvertible {
    case textEncoder  // ids, mask [1, T] -> hidden [1, T, D]
    case condition  // hidden [2, T, D], mask [2, T] -> tokens, cond_blocks, cond_head
    case update(Int)  // scale si < K - 1: f_hat, ids [1, n*n] -> f_hat_out, next_x
    case updateFinal  // f_hat, ids [1, N*N], residual [1, N*N, C_vae] -> f_hat_out
    case residual  // hidden, ids [1, N*N], noise [steps, N*N, C_vae], guidance [1] -> residual
    case decoder  // f_hat -> image [1, 3, H, W]

    public var description: String {
        switch self {
        case .textEncoder: return "text_encoder"
        case .condition: return "condition"
        case .update(let si): return "update_\(si)"
        case .updateFinal: return "update_final"
        case .residual: return "residual"
        case .decoder: return "decoder"
        }
    }
}

/// Runs an export's graphs by name (inputs and outputs named as in the manifest). Integer tensors are ids
/// and masks (Core ML takes them as int32); float tensors are float32.
public protocol GraphRunner {
    /// The KV cache of one image (Core ML: MLState).
    associatedtype StepState

    /// A fresh, empty KV cache; the loop makes one per image and passes it to every scale's step.
    func makeStepState() throws -> StepState

    /// Scale `scale`'s transformer step: x, cond_blocks, cond_head, cos, sin -> logits [2, L, V], hidden.
    func step(scale: Int, _ inputs: [String: Tensor], state: StepState) async throws -> [String: Tensor]

    /// Any other graph.
    func run(_ graph: Graph, _ inputs: [String: Tensor]) async throws -> [String: Tensor]
}

public struct GenerationResult: Sendable {
    /// [1, 3, H, W] in [0, 1]; Pixels.rgba(image) gives the 8-bit pixels.
    public let image: Tensor
    /// The sampled ids of every scale (n * n each, row-major).
    public let ids: [[Int64]]
    /// The residual head's output [1, N*N, C_vae]; nil with the residual off.
    public let residual: Tensor?
    public let settings: SamplingSettings
}

public enum HartLoop {
    /// Generate one image. `options` override the manifest's sampling defaults (checked: a HartError says
    /// what is out of range); `onScale(si, f_hat)` sees the running latent after every scale.
    public static func generate<Runner: GraphRunner>(
        manifest m: Manifest, runner: Runner, prompt: String, seed: UInt64,
        options: SamplingOptions = SamplingOptions(),
        onScale: ((Int, Tensor) async throws -> Void)? = nil
    ) async throws -> GenerationResult {
        let settings = try SamplingSettings(manifest: m, options: options)
        let scales = m.schedule.patch_nums, progress = m.schedule.progress
        guard !scales.isEmpty, progress.count == scales.count else {
            throw HartError("manifest schedule: \(scales.count) patch_nums and \(progress.count) progress values")
        }
        let last = scales.count - 1, size = scales[last]
        let tokens = m.text.max_tokens, dim = m.text.dim
        let transformer = m.model.config.transformer
        let headDim = transformer.width / transformer.heads
        let latent = m.model.config.tokenizer.latent_channels
        let steps = m.residual.steps

        // text; rows [conditional; unconditional] (spec.rows): zero features, mask [1, 0, ...], positions 0
        let (ids, mask, _) = try m.tokenize(prompt)
        let text = try await runner.run(.textEncoder, ["ids": Tensor(ints: ids, shape: [1, tokens]),
                                                        "mask": Tensor(ints: mask, shape: [1, tokens])])
        let hidden = try output(text, "hidden", of: .textEncoder, count: tokens * dim)
        let rows = hidden.floats + [Float](repeating: 0, count: tokens * dim)
        let rowsMask = mask + [1] + [Int64](repeating: 0, count: tokens - 1)
        let positions = rowPositions(mask) + [Int64](repeating: 0, count: tokens)  // spec.positions
        let offsets = [positions[tokens - 1], 0]  // each row's image RoPE starts after its last real token
        let condition = try await runner.run(.condition, ["hidden": Tensor(floats: rows, shape: [2, tokens, dim]),
                                                          "mask": Tensor(ints: rowsMask, shape: [2, tokens])])
        var x = try output(condition, "tokens", of: .condition)
        let condBlocks = try output(condition, "cond_blocks", of: .condition)
        let condHead = try output(condition, "cond_head", of: .condition)

        let state = try runner.makeStepState()
        var fHat = Tensor.zeros([1, latent, size, size])
        var lastHidden: Tensor? = nil
        var sampled: [[Int64]] = []
        for (si, n) in scales.enumerated() {
            try Task.checkCancellation()
            let length = si == 0 ? tokens : n * n
            let table = si == 0 ? textRope(positions, m.rope.text_inv_freq)
                : imageRope(n, size, offsets: offsets, m.rope.image_inv_freq)
            guard table.cos.count == 2 * length * headDim else {
                throw HartError("RoPE tables of \(table.cos.count / (2 * length)) values per token; the model's heads take \(headDim)")
            }
            let out = try await runner.step(scale: si, [
                "x": x, "cond_blocks": condBlocks, "cond_head": condHead,
                "cos": Tensor(floats: table.cos, shape: [2, length, headDim]),
                "sin": Tensor(floats: table.sin, shape: [2, length, headDim]),
            ], state: state)
            guard let logitsTensor = out["logits"], let stepHidden = out["hidden"] else {
                throw HartError("step scale_\(si) returned \(out.keys.sorted()); it must return logits and hidden")
            }
            lastHidden = stepHidden
            let count = n * n
            guard logitsTensor.shape.count == 3, logitsTensor.shape[0] == 2, logitsTensor.shape[2] > 0,
                  si == 0 ? logitsTensor.shape[1] >= 1 : logitsTensor.shape[1] == count else {
                throw HartError("step scale_\(si) returned logits \(logitsTensor.shape); expected [2, \(length), V]")
            }
            let rowsL = logitsTensor.shape[1], vocabulary = logitsTensor.shape[2]
            let logits = logitsTensor.floats
            let weights = guidanceWeights(cfg: settings.cfg, progress: progress[si])
            let uniforms = PortableRNG.uniform(seed: seed, stream: PortableRNG.tokenStream(si), count: count)
            var scaleIds = [Int64]()
            scaleIds.reserveCapacity(count)
            var row = [Float](repeating: 0, count: vocabulary)
            for k in 0..<count {
                let position = si == 0 ? rowsL - 1 : k  // scale 0: the last text position
                guide(logits, length: rowsL, vocabulary: vocabulary, position: position, weights: weights, into: &row)
                let id = sampleToken(row, u: uniforms[k], topK: settings.topK[si], topP: settings.topP,
                                     temperature: Float(settings.temperature))
                scaleIds.append(Int64(id))
            }
            sampled.append(scaleIds)
            if si < last {
                let next = try await runner.run(.update(si), ["f_hat": fHat,
                                                              "ids": Tensor(ints: scaleIds, shape: [1, count])])
                fHat = try output(next, "f_hat_out", of: .update(si))
                x = try output(next, "next_x", of: .update(si))
                try await onScale?(si, fHat)
            }
        }

        // residual head (spec.residual_guidance), or with the residual off a zero residual
        try Task.checkCancellation()
        let finalCount = size * size
        let lastIds = Tensor(ints: sampled[last], shape: [1, finalCount])
        var residual = Tensor.zeros([1, finalCount, latent])
        if settings.residual {
            guard let lastHidden else { throw HartError("no step ran") }
            var noise = [Float]()
            noise.reserveCapacity(steps * finalCount * latent)
            for k in 0..<steps {
                noise += PortableRNG.normal(seed: seed, stream: PortableRNG.residualStream(k), count: finalCount * latent)
            }
            let guidance = settings.cfg * progress[last] * settings.residualGuidance  // float64, left to right
            let out = try await runner.run(.residual, [
                "hidden": lastHidden, "ids": lastIds,
                "noise": Tensor(floats: noise, shape: [steps, finalCount, latent]),
                "guidance": Tensor(floats: [Float(guidance)], shape: [1]),
            ])
            residual = try output(out, "residual", of: .residual, count: finalCount * latent)
        }
        let updated = try await runner.run(.updateFinal, ["f_hat": fHat, "ids": lastIds, "residual": residual])
        let finalHat = try output(updated, "f_hat_out", of: .updateFinal)
        let decoded = try await runner.run(.decoder, ["f_hat": finalHat])
        let image = try output(decoded, "image", of: .decoder)
        try await onScale?(last, finalHat)
        return GenerationResult(image: image, ids: sampled, residual: settings.residual ? residual : nil,
                                settings: settings)
    }

    // ---------------------------------------------------------------------------- definitions (manifest spec)

    /// spec.guidance: t = cfg * progress in float64; 1 + t and t each rounded once to float32.
    static func guidanceWeights(cfg: Double, progress: Double) -> (onePlusT: Float, t: Float) {
        let t = cfg * progress
        return (Float(1 + t), Float(t))
    }

    /// spec.guidance on one token: row[v] = (1 + t) * cond[position, v] - t * uncond[position, v], each
    /// product rounded to float32, then the difference. `logits` [2, length, vocabulary], conditional row first.
    static func guide(_ logits: [Float], length: Int, vocabulary: Int, position: Int,
                      weights: (onePlusT: Float, t: Float), into row: inout [Float]) {
        let conditional = position * vocabulary, unconditional = (length + position) * vocabulary
        for v in 0..<vocabulary {
            let c: Float = weights.onePlusT * logits[conditional + v]
            let u: Float = weights.t * logits[unconditional + v]
            row[v] = c - u
        }
    }

    /// spec.positions: cumsum(mask) - 1 (pads repeat the last real position).
    static func rowPositions(_ mask: [Int64]) -> [Int64] {
        var real: Int64 = 0
        return mask.map { (m: Int64) -> Int64 in
            if m != 0 { real += 1 }
            return real - 1
        }
    }

    /// rope.text: positions [R * T] -> cos, sin [R * T, 2 * half] laid out [angles, angles], angles in float32.
    static func textRope(_ positions: [Int64], _ inverse: [Float]) -> (cos: [Float], sin: [Float]) {
        let half = inverse.count, width = 2 * half
        var cosines = [Float](repeating: 0, count: positions.count * width)
        var sines = cosines
        for (r, p) in positions.enumerated() {
            let position = Float(p)
            for j in 0..<half {
                let angle: Float = position * inverse[j]
                let c = Float(cos(Double(angle))), s = Float(sin(Double(angle)))
                cosines[r * width + j] = c
                cosines[r * width + j + half] = c
                sines[r * width + j] = s
                sines[r * width + j + half] = s
            }
        }
        return (cosines, sines)
    }

    /// rope.image: for each row offset, the n x n grid ((i / n) * N + offset, (j / n) * N + offset) in
    /// float32 -> cos, sin [offsets * n * n, 4 * quarter] laid out [row, row, col, col].
    static func imageRope(_ n: Int, _ last: Int, offsets: [Int64], _ inverse: [Float]) -> (cos: [Float], sin: [Float]) {
        let quarter = inverse.count, width = 4 * quarter, tokens = n * n
        var cosines = [Float](repeating: 0, count: offsets.count * tokens * width)
        var sines = cosines
        let size = Float(n), lastSize = Float(last)
        for (r, offset) in offsets.enumerated() {
            let shift = Float(offset)
            for i in 0..<n {
                for j in 0..<n {
                    let base = (r * tokens + i * n + j) * width
                    let row: Float = Float(i) / size * lastSize + shift
                    let col: Float = Float(j) / size * lastSize + shift
                    for q in 0..<quarter {
                        let rowAngle: Float = row * inverse[q], colAngle: Float = col * inverse[q]
                        let rowCos = Float(cos(Double(rowAngle))), rowSin = Float(sin(Double(rowAngle)))
                        let colCos = Float(cos(Double(colAngle))), colSin = Float(sin(Double(colAngle)))
                        cosines[base + q] = rowCos
                        cosines[base + q + quarter] = rowCos
                        cosines[base + q + 2 * quarter] = colCos
                        cosines[base + q + 3 * quarter] = colCos
                        sines[base + q] = rowSin
                        sines[base + q + quarter] = rowSin
                        sines[base + q + 2 * quarter] = colSin
                        sines[base + q + 3 * quarter] = colSin
                    }
                }
            }
        }
        return (cosines, sines)
    }

    static func output(_ outputs: [String: Tensor], _ name: String, of graph: Graph, count: Int? = nil) throws -> Tensor {
        guard let tensor = outputs[name] else {
            throw HartError("\(graph) returned no output \"\(name)\" (got \(outputs.keys.sorted().joined(separator: ", ")))")
        }
        if let count, tensor.count != count {
            throw HartError("\(graph) output \(name) has shape \(tensor.shape): \(tensor.count) values, expected \(count)")
        }
        return tensor
    }
}
