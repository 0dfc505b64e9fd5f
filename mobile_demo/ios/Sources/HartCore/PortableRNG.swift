// hart-splitmix64-v1 (hart/portable/rng.py): counter-based SplitMix64, same numbers as Python.
import Foundation

public enum PortableRNG {
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    static func key(seed: UInt64, stream: UInt64) -> UInt64 {
        mix(mix(seed) ^ (stream &* 0xD1B5_4A32_D192_ED03))
    }

    static func top24(_ key: UInt64, _ index: Int) -> Double {
        Double(mix(key &+ UInt64(index + 1) &* 0x9E37_79B9_7F4A_7C15) >> 40)
    }

    public static func tokenStream(_ scale: Int) -> UInt64 { UInt64(scale) }
    public static func residualStream(_ block: Int) -> UInt64 { 2048 + UInt64(block) }

    public static func uniform(seed: UInt64, stream: UInt64, count: Int) -> [Float] {
        let k = key(seed: seed, stream: stream)
        return (0..<count).map { Float(top24(k, $0) * 0x1p-24) }
    }

    public static func normal(seed: UInt64, stream: UInt64, count: Int) -> [Float] {
        let k = key(seed: seed, stream: stream)
        var out = [Float](repeating: 0, count: count)
        var pair = 0
        while 2 * pair < count {
            let u1 = (top24(k, 2 * pair) + 1) * 0x1p-24, u2 = top24(k, 2 * pair + 1) * 0x1p-24
            let r = (-2 * log(u1)).squareRoot()
            out[2 * pair] = Float(r * cos(2 * .pi * u2))
            if 2 * pair + 1 < count { out[2 * pair + 1] = Float(r * sin(2 * .pi * u2)) }
            pair += 1
        }
        return out
    }
}
