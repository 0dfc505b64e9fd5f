// Replays the golden trace (hart/golden.py) through HartLoop with no model: a fake GraphRunner answers
// every graph call with the recorded outputs and checks what the loop feeds it, the same checks as
// hart.golden.ReplayBackend and mobile_demo/web/replay.mjs (tokenized prompt, [cond; uncond] rows and
// mask, placeholders passed along, RoPE tables, ids of every scale, residual noise and guidance, the
// final residual), then the result's ids, its 8-bit pixels and the rounding probe. The trace is read in
// place from the repository (../../../../hart/assets/tiny/golden_trace.safetensors from this file), the
// tiny model's manifest from tiny_manifest.json next to this file (hart.export.manifest.describe_model).
import Foundation
import XCTest
@testable import HartCore

let testsFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
let traceURL = testsFolder.appendingPathComponent("../../../../hart/assets/tiny/golden_trace.safetensors").standardizedFileURL
let manifestURL = testsFolder.appendingPathComponent("tiny_manifest.json")

struct ReplayMismatch: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

// ------------------------------------------------------------------------------------------ the trace file

/// safetensors: 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets},
/// "__metadata__": {"trace": JSON}}, then the raw little-endian arrays (F32, I64, BOOL / U8).
struct GoldenTrace {
    struct Case: Decodable {
        struct Options: Decodable {
            let cfg: Double?
            let top_k: TopK?
            let top_p: Double?
            let temperature: Double?
            let residual: Bool?
            let residual_guidance: Double?

            var sampling: SamplingOptions {
                SamplingOptions(cfg: cfg, topK: top_k, topP: top_p, temperature: temperature, residual: residual,
                                residualGuidance: residual_guidance)
            }
        }
        struct Settings: Decodable {
            let cfg: Double
            let top_k: [Int]
            let top_p: Double
            let temperature: Double
            let residual_guidance: Double
        }
        let name: String
        let prompt: String
        let prompt_key: String
        let seed: UInt64
        let options: Options
        let tokens: String  // the case whose logits and ids this one uses
        let settings: Settings
        let guidance: Double?  // present when the residual head ran
        let task: String?  // "edit": starts from a recorded image and mask; the Swift loop has no edit yet (skipped)
    }

    struct Meta: Decodable { let cases: [Case] }

    var arrays: [String: Tensor]
    let cases: [Case]

    func array(_ key: String) throws -> Tensor {
        guard let tensor = arrays[key] else { throw ReplayMismatch("the trace has no array \(key)") }
        return tensor
    }

    static func load(_ url: URL) throws -> GoldenTrace {
        let bytes = [UInt8](try Data(contentsOf: url))
        guard bytes.count >= 8 else { throw ReplayMismatch("\(url.path): not a safetensors file") }
        let length = Int(littleEndian(bytes, 0, 8))
        guard length > 0, 8 + length <= bytes.count else { throw ReplayMismatch("\(url.path): bad header length") }
        let header = try JSONDecoder().decode(Header.self, from: Data(bytes[8..<(8 + length)]))
        let base = 8 + length
        var arrays: [String: Tensor] = [:]
        for (name, entry) in header.entries {
            guard entry.data_offsets.count == 2 else { throw ReplayMismatch("\(name): bad data_offsets") }
            let begin = base + entry.data_offsets[0], end = base + entry.data_offsets[1]
            guard begin <= end, end <= bytes.count else { throw ReplayMismatch("\(name): data past the end of the file") }
            let count = entry.shape.reduce(1, *)
            switch entry.dtype {
            case "F32":
                guard end - begin == 4 * count else { throw ReplayMismatch("\(name): \(end - begin) bytes for \(entry.shape)") }
                let values = stride(from: begin, to: end, by: 4).map {
                    Float(bitPattern: UInt32(truncatingIfNeeded: littleEndian(bytes, $0, 4)))
                }
                arrays[name] = Tensor(floats: values, shape: entry.shape)
            case "I64":
                guard end - begin == 8 * count else { throw ReplayMismatch("\(name): \(end - begin) bytes for \(entry.shape)") }
                let values = stride(from: begin, to: end, by: 8).map { Int64(bitPattern: littleEndian(bytes, $0, 8)) }
                arrays[name] = Tensor(ints: values, shape: entry.shape)
            case "BOOL", "U8":
                guard end - begin == count else { throw ReplayMismatch("\(name): \(end - begin) bytes for \(entry.shape)") }
                arrays[name] = Tensor(ints: bytes[begin..<end].map { Int64($0) }, shape: entry.shape)
            default:
                throw ReplayMismatch("\(name): dtype \(entry.dtype) is not one the trace uses")
            }
        }
        let meta = try JSONDecoder().decode(Meta.self, from: Data(header.trace.utf8))
        return GoldenTrace(arrays: arrays, cases: meta.cases)
    }
}

private func littleEndian(_ bytes: [UInt8], _ at: Int, _ count: Int) -> UInt64 {
    var value: UInt64 = 0
    for k in 0..<count { value |= UInt64(bytes[at + k]) << (8 * k) }
    return value
}

private struct AnyKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { return nil }
}

private struct Header: Decodable {
    struct Entry: Decodable {
        let dtype: String
        let shape: [Int]
        let data_offsets: [Int]
    }
    struct Metadata: Decodable { let trace: String }

    var entries: [String: Entry] = [:]
    var trace = ""

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: AnyKey.self)
        for key in container.allKeys {
            if key.stringValue == "__metadata__" {
                trace = try container.decode(Metadata.self, forKey: key).trace
            } else {
                entries[key.stringValue] = try container.decode(Entry.self, forKey: key)
            }
        }
    }
}

extension Tensor {
    /// Every value as a Double (exact for float32 and for the trace's integers).
    var values: [Double] {
        switch storage {
        case .floats(let values): return values.map { Double($0) }
        case .ints(let values): return values.map { Double($0) }
        }
    }
}

// ------------------------------------------------------------------------------------------ the fake runner

/// Answers one case's graph calls from the trace and checks every input against it.
final class ReplayRunner: GraphRunner {
    /// The KV cache stand-in: the loop must make one per image and pass that one to every scale.
    final class Cache {}
    typealias StepState = Cache

    let trace: GoldenTrace
    let testCase: GoldenTrace.Case
    let latent: Int, size: Int, last: Int
    var scale = 0
    var cache: Cache?
    var checks: [String] = []

    init(trace: GoldenTrace, testCase: GoldenTrace.Case, manifest: Manifest) {
        self.trace = trace
        self.testCase = testCase
        latent = manifest.model.config.tokenizer.latent_channels
        size = manifest.schedule.patch_nums.last ?? 0
        last = manifest.schedule.patch_nums.count - 1
    }

    /// Graph outputs the loop only passes along are one-element tags: 1000 * graph index + output index.
    static func placeholder(_ graph: String, _ output: Int) -> Tensor {
        let index = ["condition", "step", "update"].firstIndex(of: graph) ?? -1
        return Tensor(floats: [Float(1000 * index + output)], shape: [1])
    }

    func mismatch(_ message: String) -> ReplayMismatch { ReplayMismatch("case \(testCase.name): \(message)") }

    /// Same shape, same kind (integers or floats) and the same values (exactly, NaN matching NaN; or
    /// within `atol`), else "case C: WHAT differs from the trace".
    func expect(_ what: String, _ got: Tensor?, _ want: Tensor, atol: Double = 0) throws {
        guard let got else { throw mismatch("\(what) is missing") }
        let g = got.values, w = want.values
        var same = got.shape == want.shape && got.isInteger == want.isInteger && g.count == w.count
        if same {
            for i in g.indices {
                let ok = atol > 0 ? abs(g[i] - w[i]) <= atol : (g[i] == w[i] || (g[i].isNaN && w[i].isNaN))
                if !ok {
                    same = false
                    break
                }
            }
        }
        guard same else { throw mismatch("\(what) differs from the trace") }
        checks.append(what)
    }

    func makeStepState() throws -> Cache {
        guard cache == nil else { throw mismatch("a second KV cache for one image") }
        let made = Cache()
        cache = made
        return made
    }

    func step(scale si: Int, _ f: [String: Tensor], state: Cache) async throws -> [String: Tensor] {
        let p = testCase.prompt_key, t = testCase.tokens
        guard si == scale else { throw mismatch("step scale_\(si) called at scale \(scale)") }
        guard state === cache else { throw mismatch("step \(si) state is not the image's KV cache") }
        checks.append("step \(si) state")
        try expect("step \(si) x", f["x"], si == 0 ? Self.placeholder("condition", 0) : Self.placeholder("update", 1))
        try expect("step \(si) cond_blocks", f["cond_blocks"], Self.placeholder("condition", 1))
        try expect("step \(si) cond_head", f["cond_head"], Self.placeholder("condition", 2))
        try expect("step \(si) cos", f["cos"], try trace.array("\(p)/cos_\(si)"), atol: 1e-6)
        try expect("step \(si) sin", f["sin"], try trace.array("\(p)/sin_\(si)"), atol: 1e-6)
        return try ["logits": trace.array("\(t)/logits_\(si)"), "hidden": Self.placeholder("step", 0)]
    }

    func run(_ graph: Graph, _ f: [String: Tensor]) async throws -> [String: Tensor] {
        let p = testCase.prompt_key, t = testCase.tokens, name = testCase.name
        switch graph {
        case .textEncoder:
            try expect("text ids", f["ids"], try trace.array("\(p)/ids"))
            try expect("text mask", f["mask"], try trace.array("\(p)/mask"))
            return try ["hidden": trace.array("\(p)/hidden")]
        case .condition:
            let hidden = try trace.array("\(p)/hidden")  // [1, T, D]
            let rows = hidden.floats + [Float](repeating: 0, count: hidden.count)
            try expect("condition rows", f["hidden"], Tensor(floats: rows, shape: [2] + Array(hidden.shape.dropFirst())))
            let mask = try trace.array("\(p)/mask")  // [1, T]
            let null = [Int64(1)] + [Int64](repeating: 0, count: mask.count - 1)
            try expect("condition mask", f["mask"], Tensor(ints: mask.ints + null, shape: [2, mask.count]))
            return ["tokens": Self.placeholder("condition", 0), "cond_blocks": Self.placeholder("condition", 1),
                    "cond_head": Self.placeholder("condition", 2)]
        case .update(let si):
            guard si == scale, si < last else { throw mismatch("update_\(si) called at scale \(scale)") }
            let fHat = si == 0 ? Tensor.zeros([1, latent, size, size]) : Self.placeholder("update", 0)
            try expect("update \(si) f_hat", f["f_hat"], fHat)
            try expect("scale \(si) ids", f["ids"], try trace.array("\(t)/ids_\(si)"))
            scale += 1
            return ["f_hat_out": Self.placeholder("update", 0), "next_x": Self.placeholder("update", 1)]
        case .updateFinal:
            guard scale == last else { throw mismatch("update_final called at scale \(scale)") }
            let fHat = last == 0 ? Tensor.zeros([1, latent, size, size]) : Self.placeholder("update", 0)
            try expect("final f_hat", f["f_hat"], fHat)
            try expect("scale \(last) ids", f["ids"], try trace.array("\(t)/ids_\(last)"))
            scale += 1
            // residual off: a zero residual
            let residual = trace.arrays["\(name)/residual"] ?? Tensor.zeros([1, size * size, latent])
            try expect("final residual", f["residual"], residual)
            return ["f_hat_out": Self.placeholder("update", 0)]
        case .residual:
            guard let guidance = testCase.guidance else { throw mismatch("the residual head ran; the trace has none") }
            try expect("residual hidden", f["hidden"], Self.placeholder("step", 0))
            try expect("residual ids", f["ids"], try trace.array("\(t)/ids_\(last)"))
            // libm cos/sin/log may differ in the last bit
            try expect("residual noise", f["noise"], try trace.array("\(name)/noise"), atol: 1e-6)
            try expect("residual guidance", f["guidance"], Tensor(floats: [Float(guidance)], shape: [1]))
            return try ["residual": trace.array("\(name)/residual")]
        case .decoder:
            try expect("decoder f_hat", f["f_hat"], Self.placeholder("update", 0))
            return try ["image": trace.array("\(name)/image")]
        }
    }
}

/// Every case through HartLoop; throws a ReplayMismatch naming the case and the check on the first
/// difference. Returns each case's passed checks.
func replay(_ trace: GoldenTrace, _ manifest: Manifest) async throws -> [String: [String]] {
    var results: [String: [String]] = [:]
    for testCase in trace.cases where testCase.task == nil {
        let runner = ReplayRunner(trace: trace, testCase: testCase, manifest: manifest)
        let result = try await HartLoop.generate(manifest: manifest, runner: runner, prompt: testCase.prompt,
                                                 seed: testCase.seed, options: testCase.options.sampling)
        let s = result.settings, want = testCase.settings
        guard s.cfg == want.cfg, s.topK == want.top_k, s.topP == want.top_p, s.temperature == want.temperature,
              s.residualGuidance == want.residual_guidance,
              s.residual == (testCase.options.residual ?? true) else {
            throw runner.mismatch("resolved settings \(s) differ from the trace's \(want)")
        }
        runner.checks.append("settings")
        guard runner.scale == manifest.schedule.patch_nums.count else {
            throw runner.mismatch("the loop ran \(runner.scale) updates")
        }
        guard result.ids.count == manifest.schedule.patch_nums.count else {
            throw runner.mismatch("the loop returned ids of \(result.ids.count) scales")
        }
        for (si, ids) in result.ids.enumerated() {
            let recorded = try trace.array("\(testCase.tokens)/ids_\(si)").ints
            guard ids == recorded else {
                throw runner.mismatch("result ids \(si) differ from the trace")
            }
        }
        runner.checks.append("result ids")
        let rgba = try Pixels.rgba(result.image)
        let pixels = try trace.array("\(testCase.name)/pixels").ints  // [1, H, W, 3]
        let plane = rgba.width * rgba.height
        guard pixels.count == 3 * plane else { throw runner.mismatch("pixels: \(pixels.count) values for \(plane) pixels") }
        for i in 0..<plane {
            for channel in 0..<3 where Int64(rgba.bytes[4 * i + channel]) != pixels[3 * i + channel] {
                throw runner.mismatch("pixel \(i) channel \(channel) differs from the trace")
            }
        }
        runner.checks.append("pixels")
        results[testCase.name] = runner.checks
    }
    // 8-bit rounding of near-halves: round half to even in float32
    let probe = try trace.array("rounding/values").floats, rounded = try trace.array("rounding/pixels").ints
    guard probe.count == rounded.count else { throw ReplayMismatch("rounding probe: \(probe.count) values, \(rounded.count) pixels") }
    for (i, value) in probe.enumerated() where Int64(Pixels.to8bit(value)) != rounded[i] {
        throw ReplayMismatch("rounding probe: 8-bit rounding of \(value) differs from the trace")
    }
    results["rounding"] = ["rounding probe"]
    return results
}

// ------------------------------------------------------------------------------------------ the tests

final class GoldenTraceTests: XCTestCase {
    func load() throws -> (trace: GoldenTrace, manifest: Manifest) {
        guard FileManager.default.fileExists(atPath: traceURL.path) else {
            throw ReplayMismatch("no golden trace at \(traceURL.path) (python -m hart.golden writes it)")
        }
        let trace = try GoldenTrace.load(traceURL)
        let manifest = try Manifest.load(file: manifestURL)
        return (trace, manifest)
    }

    func testReplaysEveryCase() async throws {
        let (trace, manifest) = try load()
        XCTAssertEqual(trace.cases.map(\.name), ["defaults", "residual_guidance_1", "no_residual", "overrides", "edit"])
        do {
            let results = try await replay(trace, manifest)
            for testCase in trace.cases where testCase.task == nil {
                let checks = results[testCase.name] ?? []
                XCTAssertTrue(checks.contains("scale 5 ids") && checks.contains("pixels"), "\(testCase.name): \(checks)")
                XCTAssertEqual(checks.contains("residual noise"), testCase.guidance != nil, testCase.name)
            }
        } catch let error as ReplayMismatch {
            XCTFail(error.message)
        }
    }

    /// The replay can fail: one recorded id changed in memory must stop it at that scale's ids.
    func testChangedIdFailsTheReplay() async throws {
        let loaded = try load()
        var trace = loaded.trace
        let key = "defaults/ids_3"
        let recorded = try trace.array(key)
        var ids = recorded.ints
        ids[5] = (ids[5] + 1) % 512
        trace.arrays[key] = Tensor(ints: ids, shape: recorded.shape)
        do {
            _ = try await replay(trace, loaded.manifest)
            XCTFail("the replay accepted a changed id")
        } catch let error as ReplayMismatch {
            XCTAssertEqual(error.message, "case defaults: scale 3 ids differs from the trace")
        }
    }

    /// The pieces the replay checks only through their results: the RNG's uniforms and the guidance mix
    /// (float32, t rounded once) against the trace's uniforms_<si> and guided_<si> (the first sampled token).
    func testUniformsAndGuidanceMix() throws {
        let (trace, manifest) = try load()
        for testCase in trace.cases where testCase.tokens == testCase.name {
            let settings = try SamplingSettings(manifest: manifest, options: testCase.options.sampling)
            for (si, n) in manifest.schedule.patch_nums.enumerated() {
                let uniforms = PortableRNG.uniform(seed: testCase.seed, stream: PortableRNG.tokenStream(si), count: n * n)
                XCTAssertEqual(uniforms, try trace.array("\(testCase.name)/uniforms_\(si)").floats,
                               "case \(testCase.name): uniforms \(si)")
                let logits = try trace.array("\(testCase.name)/logits_\(si)")
                let length = logits.shape[1], vocabulary = logits.shape[2]
                var row = [Float](repeating: 0, count: vocabulary)
                HartLoop.guide(logits.floats, length: length, vocabulary: vocabulary, position: si == 0 ? length - 1 : 0,
                               weights: HartLoop.guidanceWeights(cfg: settings.cfg, progress: manifest.schedule.progress[si]),
                               into: &row)
                XCTAssertEqual(row, try trace.array("\(testCase.name)/guided_\(si)").floats,
                               "case \(testCase.name): guided logits \(si)")
            }
        }
    }
}
