// The generation loop on Core ML, step for step the one in hart/runtime/loop.py: text -> condition ->
// one stateful `step` function per scale (the KV cache is Core ML state) -> sample with the portable
// RNG -> `update` function per scale -> residual head -> final update -> decoder.
import CoreML
import Foundation

public final class HartGenerator {
    public let manifest: Manifest
    let text, condition, residual, decoder: MLModel
    let steps: [MLModel], updates: [MLModel]

    public init(folder: URL) async throws {
        manifest = try Manifest.load(from: folder)
        func load(_ name: String, _ function: String? = nil) async throws -> MLModel {
            let compiled = try await MLModel.compileModel(at: folder.appendingPathComponent("\(name).mlpackage"))
            let configuration = MLModelConfiguration()
            configuration.computeUnits = .all
            configuration.functionName = function
            return try await MLModel.load(contentsOf: compiled, configuration: configuration)
        }
        let scales = manifest.schedule.patch_nums.count
        text = try await load("text_encoder")
        condition = try await load("condition")
        residual = try await load("residual")
        decoder = try await load("decoder")
        var steps = [MLModel](), updates = [MLModel]()
        for si in 0..<scales { steps.append(try await load("step", "scale_\(si)")) }
        for si in 0..<scales { updates.append(try await load("update", si < scales - 1 ? "scale_\(si)" : "final")) }
        self.steps = steps
        self.updates = updates
    }

    /// Returns the image [1, 3, H, W] in [0, 1]; `onScale` sees the running latent after every scale.
    public func generate(prompt: String, seed: UInt64, cfg: Double? = nil,
                         onScale: ((Int, MLMultiArray) async throws -> Void)? = nil) async throws -> MLMultiArray {
        let m = manifest, cfg = cfg ?? m.sampling.cfg
        let scales = m.schedule.patch_nums, last = scales.count - 1, size = scales[last]
        let tokens = m.text.max_tokens, headDim = m.model.config.transformer.width / m.model.config.transformer.heads
        let latent = m.model.config.tokenizer.latent_channels
        let (ids, mask, length) = try m.tokenize(prompt)

        let hidden = try predict(text, ["ids": array(ids.map(Float.init), [1, tokens], .int32),
                                        "mask": array(mask.map(Float.init), [1, tokens], .int32)])["hidden"]!
        // rows [conditional; unconditional]: the unconditional row has zero features, one real token, position 0
        let features = floats(hidden) + [Float](repeating: 0, count: tokens * m.text.dim)
        let mask2 = mask.map(Float.init) + [1] + [Float](repeating: 0, count: tokens - 1)
        let positions = (0..<tokens).map { Float(min($0, length - 1)) } + [Float](repeating: 0, count: tokens)
        let prefix = try predict(condition, ["hidden": array(features, [2, tokens, m.text.dim]),
                                             "mask": array(mask2, [2, tokens], .int32)])
        var x = prefix["tokens"]!
        let state = steps[0].makeState()
        var fHat = try array([Float](repeating: 0, count: latent * size * size), [1, latent, size, size])
        var lastHidden = x, lastIds = [Float]()

        for (si, n) in scales.enumerated() {
            let (cos, sin) = si == 0 ? ropeText(positions, m.rope.text_inv_freq)
                : ropeImage(n, size, offsets: [Float(length - 1), 0], m.rope.image_inv_freq)
            let rows = si == 0 ? tokens : n * n
            let out = try await steps[si].prediction(from: provider([
                "x": x, "cond_blocks": prefix["cond_blocks"]!, "cond_head": prefix["cond_head"]!,
                "cos": array(cos, [2, rows, headDim]), "sin": array(sin, [2, rows, headDim])]), using: state)
            lastHidden = out.featureValue(for: "hidden")!.multiArrayValue!
            let logits = floats(out.featureValue(for: "logits")!.multiArrayValue!)
            let vocabulary = logits.count / (2 * rows)
            let t = Float(cfg * m.schedule.progress[si])
            let uniforms = PortableRNG.uniform(seed: seed, stream: PortableRNG.tokenStream(si), count: n * n)
            lastIds = (0..<(n * n)).map { k in
                let position = si == 0 ? rows - 1 : k  // scale 0: the last text position
                let row = (0..<vocabulary).map { v in
                    (1 + t) * logits[position * vocabulary + v] - t * logits[(rows + position) * vocabulary + v]
                }
                return Float(sampleToken(row, u: uniforms[k], topK: m.sampling.top_k[si], topP: m.sampling.top_p,
                                         temperature: m.sampling.temperature))
            }
            if si < last {
                let next = try predict(updates[si], ["f_hat": fHat, "ids": array(lastIds, [1, n * n], .int32)])
                fHat = next["f_hat_out"]!
                x = next["next_x"]!
                try await onScale?(si, fHat)
            }
        }
        let count = size * size
        var noise = [Float]()
        for k in 0..<m.residual.steps {
            noise += PortableRNG.normal(seed: seed, stream: PortableRNG.residualStream(k), count: count * latent)
        }
        let correction = try predict(residual, [
            "hidden": lastHidden, "ids": array(lastIds, [1, count], .int32),
            "noise": array(noise, [m.residual.steps, count, latent]),
            "guidance": array([Float(cfg * m.schedule.progress[last] * m.sampling.residual_guidance)], [1])])["residual"]!
        let final = try predict(updates[last], ["f_hat": fHat, "ids": array(lastIds, [1, count], .int32),
                                                "residual": correction])["f_hat_out"]!
        try await onScale?(last, final)
        return try predict(decoder, ["f_hat": final])["image"]!
    }

    // ---------------------------------------------------------------------------- helpers
    func predict(_ model: MLModel, _ inputs: [String: MLMultiArray]) throws -> [String: MLMultiArray] {
        let out = try model.prediction(from: provider(inputs))
        return Dictionary(uniqueKeysWithValues: out.featureNames.map { ($0, out.featureValue(for: $0)!.multiArrayValue!) })
    }

    func provider(_ inputs: [String: MLMultiArray]) throws -> MLDictionaryFeatureProvider {
        try MLDictionaryFeatureProvider(dictionary: inputs.mapValues { MLFeatureValue(multiArray: $0) })
    }

    func array(_ values: [Float], _ shape: [Int], _ type: MLMultiArrayDataType = .float32) throws -> MLMultiArray {
        let result = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: type)
        for (i, v) in values.enumerated() { result[i] = NSNumber(value: v) }
        return result
    }

    func floats(_ array: MLMultiArray) -> [Float] { MLShapedArray<Float>(converting: array).scalars }

    func ropeText(_ positions: [Float], _ inverse: [Float]) -> ([Float], [Float]) {
        var cos = [Float](), sin = [Float]()
        for p in positions {
            let angles = inverse.map { p * $0 }
            cos += (angles + angles).map(Foundation.cos)
            sin += (angles + angles).map(Foundation.sin)
        }
        return (cos, sin)
    }

    func ropeImage(_ n: Int, _ last: Int, offsets: [Float], _ inverse: [Float]) -> ([Float], [Float]) {
        var cos = [Float](), sin = [Float]()
        for offset in offsets {
            for i in 0..<n { for j in 0..<n {
                let row = Float(i) / Float(n) * Float(last) + offset, col = Float(j) / Float(n) * Float(last) + offset
                let r = inverse.map { row * $0 }, c = inverse.map { col * $0 }
                cos += (r + r + c + c).map(Foundation.cos)
                sin += (r + r + c + c).map(Foundation.sin)
            } }
        }
        return (cos, sin)
    }
}
