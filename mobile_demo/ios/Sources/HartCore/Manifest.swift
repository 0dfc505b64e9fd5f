// The parts of manifest.json the loop reads (hart/runtime/manifest.py writes it).
import Foundation

public struct Manifest: Decodable {
    public struct Text: Decodable { public let vocab: [String]; public let max_tokens: Int; public let dim: Int }
    public struct Schedule: Decodable { public let patch_nums: [Int]; public let progress: [Double] }
    public struct Sampling: Decodable {
        public let cfg: Double; public let top_k: [Int]; public let top_p: Double; public let temperature: Float
        public let residual_guidance: Double
    }
    public struct Rope: Decodable { public let text_inv_freq: [Float]; public let image_inv_freq: [Float] }
    public struct Residual: Decodable { public let steps: Int }
    public struct Transformer: Decodable { public let width: Int; public let heads: Int }
    public struct Tokenizer: Decodable { public let latent_channels: Int }
    public struct Config: Decodable { public let transformer: Transformer; public let tokenizer: Tokenizer }
    public struct Model: Decodable { public let config: Config }
    public let text: Text, schedule: Schedule, sampling: Sampling, rope: Rope, residual: Residual, model: Model

    public static func load(from folder: URL) throws -> Manifest {
        try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: folder.appendingPathComponent("manifest.json")))
    }

    /// Lower-case runs of letters; id = 2 + vocabulary index; right-padded; unknown words are an error.
    public func tokenize(_ prompt: String) throws -> (ids: [Int32], mask: [Int32], length: Int) {
        let words = prompt.lowercased().split { !$0.isLetter || !$0.isASCII }.map(String.init)
        let known = Dictionary(uniqueKeysWithValues: text.vocab.enumerated().map { ($1, Int32($0 + 2)) })
        let unknown = words.filter { known[$0] == nil }
        guard !words.isEmpty, unknown.isEmpty, words.count <= text.max_tokens else {
            throw NSError(domain: "hart", code: 1, userInfo: [NSLocalizedDescriptionKey:
                "unknown word(s) \(unknown.joined(separator: ", ")); this model knows: \(text.vocab.sorted().joined(separator: ", "))"])
        }
        let ids = words.map { known[$0]! } + Array(repeating: 0, count: text.max_tokens - words.count)
        return (ids, ids.map { $0 == 0 ? 0 : 1 }, words.count)
    }
}
