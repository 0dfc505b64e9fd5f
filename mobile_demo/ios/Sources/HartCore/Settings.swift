// One call's sampling settings: the manifest's defaults (manifest.sampling) with the caller's overrides,
// checked (manifest.sampling.overrides), as resolveSettings in mobile_demo/web/hart_runtime.mjs and
// SamplingSettings in hart/portable/spec.py.
import Foundation

/// top-k: one value for every scale, or one per scale (0 keeps the whole vocabulary).
public enum TopK: Equatable, Sendable, Decodable, ExpressibleByIntegerLiteral, ExpressibleByArrayLiteral {
    case every(Int)
    case perScale([Int])

    public init(integerLiteral value: Int) { self = .every(value) }
    public init(arrayLiteral elements: Int...) { self = .perScale(elements) }

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(Int.self) {
            self = .every(value)
        } else {
            self = .perScale(try container.decode([Int].self))
        }
    }

    /// One value per scale.
    public func values(scales: Int) -> [Int] {
        switch self {
        case .every(let k): return [Int](repeating: k, count: scales)
        case .perScale(let ks): return ks
        }
    }
}

/// What a caller may override; nil keeps the manifest's default (residual: on).
public struct SamplingOptions: Equatable, Sendable {
    public var cfg: Double?
    public var topK: TopK?
    public var topP: Double?
    public var temperature: Double?
    public var residual: Bool?
    public var residualGuidance: Double?

    public init(cfg: Double? = nil, topK: TopK? = nil, topP: Double? = nil, temperature: Double? = nil,
                residual: Bool? = nil, residualGuidance: Double? = nil) {
        self.cfg = cfg
        self.topK = topK
        self.topP = topP
        self.temperature = temperature
        self.residual = residual
        self.residualGuidance = residualGuidance
    }
}

/// The resolved settings of one generation: every number finite and in range.
public struct SamplingSettings: Equatable, Sendable {
    public let cfg: Double
    public let topK: [Int]  // one per scale
    public let topP: Double
    public let temperature: Double
    public let residual: Bool
    public let residualGuidance: Double

    public init(manifest: Manifest, options: SamplingOptions = SamplingOptions()) throws {
        let defaults = manifest.sampling, scales = manifest.schedule.patch_nums.count
        let cfg = options.cfg ?? defaults.cfg
        let topP = options.topP ?? defaults.top_p
        let temperature = options.temperature ?? defaults.temperature
        let residualGuidance = options.residualGuidance ?? defaults.residual_guidance ?? 1
        let topK = (options.topK ?? .perScale(defaults.top_k)).values(scales: scales)
        let numbers: [(String, Double)] = [("cfg", cfg), ("topP", topP), ("temperature", temperature),
                                           ("residualGuidance", residualGuidance)]
        for (name, value) in numbers where !value.isFinite {
            throw HartError("\(name) must be a finite number (got \(value))")
        }
        guard cfg >= 0, topP >= 0, topP < 1, temperature >= 1e-3, residualGuidance >= 0, topK.count == scales,
              topK.allSatisfy({ $0 >= 0 }) else {
            throw HartError("invalid sampling settings: cfg \(cfg) (>= 0), top-p \(topP) (in [0, 1)), "
                + "temperature \(temperature) (>= 0.001), top-k \(topK) (integers >= 0, one or one per scale of "
                + "\(scales)), residual guidance \(residualGuidance) (>= 0)")
        }
        self.cfg = cfg
        self.topK = topK
        self.topP = topP
        self.temperature = temperature
        self.residual = options.residual ?? true
        self.residualGuidance = residualGuidance
    }
}
