// The parts of manifest.json the loop reads (hart/runtime/manifest.py writes it; format_version 2).
import Foundation

public struct Manifest: Decodable {
    public struct Text: Decodable {
        public let vocab: [String]
        public let max_tokens: Int
        public let dim: Int
        public let pad_id: Int?
        public let unknown_id: Int?
    }
    public struct Schedule: Decodable { public let patch_nums: [Int]; public let progress: [Double] }
    public struct Sampling: Decodable {
        public let cfg: Double
        public let top_k: [Int]
        public let top_p: Double
        public let temperature: Double
        public let residual_guidance: Double?  // absent before it existed: 1 (HART)
    }
    public struct Rope: Decodable { public let text_inv_freq: [Float]; public let image_inv_freq: [Float] }
    public struct Residual: Decodable { public let steps: Int }
    public struct Transformer: Decodable { public let width: Int; public let heads: Int }
    public struct Tokenizer: Decodable { public let latent_channels: Int }
    public struct Config: Decodable { public let transformer: Transformer; public let tokenizer: Tokenizer }
    public struct Model: Decodable { public let config: Config }

    /// The format this code reads; a manifest that states another one is refused.
    public static let formatVersion = 2

    public let format_version: Int?
    public let text: Text, schedule: Schedule, sampling: Sampling, rope: Rope, residual: Residual, model: Model

    /// FOLDER/manifest.json
    public static func load(from folder: URL) throws -> Manifest {
        try load(file: folder.appendingPathComponent("manifest.json"))
    }

    public static func load(file: URL) throws -> Manifest {
        try decode(Data(contentsOf: file))
    }

    public static func decode(_ data: Data) throws -> Manifest {
        let manifest = try JSONDecoder().decode(Manifest.self, from: data)
        if let version = manifest.format_version, version != formatVersion {
            throw HartError("manifest format_version \(version); this loop reads format_version \(formatVersion)")
        }
        let scales = manifest.schedule.patch_nums.count
        guard scales > 0, manifest.schedule.progress.count == scales else {
            throw HartError("manifest schedule: \(scales) patch_nums and \(manifest.schedule.progress.count) progress values")
        }
        return manifest
    }

    /// text.tokenization: lower-case, runs of a-z, id = 2 + vocabulary index, right-padded with pad_id to
    /// max_tokens, mask = id != pad_id. A prompt with no word, an unknown word or too many words is refused.
    public func tokenize(_ prompt: String) throws -> (ids: [Int64], mask: [Int64], length: Int) {
        var words: [String] = []
        var current = ""
        for scalar in prompt.lowercased().unicodeScalars {
            if scalar.value >= 0x61 && scalar.value <= 0x7A {  // a-z
                current.unicodeScalars.append(scalar)
            } else if !current.isEmpty {
                words.append(current)
                current = ""
            }
        }
        if !current.isEmpty { words.append(current) }

        let known = Dictionary(text.vocab.enumerated().map { ($1, Int64($0 + 2)) }, uniquingKeysWith: { _, last in last })
        let unknown = Set(words.filter { known[$0] == nil }).sorted()
        if words.isEmpty || !unknown.isEmpty {
            let what = unknown.isEmpty ? "no words" : "unknown word(s) " + unknown.map { "'\($0)'" }.joined(separator: ", ")
            throw HartError("the prompt has \(what); this model knows: \(text.vocab.sorted().joined(separator: ", "))")
        }
        guard words.count <= text.max_tokens else {
            throw HartError("the prompt has \(words.count) words; at most \(text.max_tokens)")
        }
        let pad = Int64(text.pad_id ?? 0)
        let ids = words.map { known[$0]! } + [Int64](repeating: pad, count: text.max_tokens - words.count)
        return (ids, ids.map { $0 == pad ? 0 : 1 }, words.count)
    }
}
