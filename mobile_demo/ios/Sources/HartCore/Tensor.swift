// The loop's plain tensors (no Core ML here): a shape and row-major floats or integers. A GraphRunner
// converts them to and from its own arrays (CoreMLRunner: MLMultiArray, int32 for the integers).
import Foundation

public struct Tensor: Equatable, Sendable {
    public enum Storage: Equatable, Sendable {
        case floats([Float])
        case ints([Int64])
    }

    public let shape: [Int]
    public let storage: Storage

    public init(floats: [Float], shape: [Int]) {
        precondition(floats.count == shape.reduce(1, *), "\(floats.count) floats for shape \(shape)")
        self.shape = shape
        self.storage = .floats(floats)
    }

    public init(ints: [Int64], shape: [Int]) {
        precondition(ints.count == shape.reduce(1, *), "\(ints.count) integers for shape \(shape)")
        self.shape = shape
        self.storage = .ints(ints)
    }

    /// float32 zeros of `shape`.
    public static func zeros(_ shape: [Int]) -> Tensor {
        Tensor(floats: [Float](repeating: 0, count: shape.reduce(1, *)), shape: shape)
    }

    public var count: Int { shape.reduce(1, *) }

    public var isInteger: Bool {
        switch storage {
        case .floats: return false
        case .ints: return true
        }
    }

    /// The values as floats (integers converted; exact below 2^24).
    public var floats: [Float] {
        switch storage {
        case .floats(let values): return values
        case .ints(let values): return values.map { Float($0) }
        }
    }

    /// The values as integers (floats truncated toward zero; non-finite or out of range: 0).
    public var ints: [Int64] {
        switch storage {
        case .ints(let values): return values
        case .floats(let values): return values.map { Int64(exactly: $0.rounded(.towardZero)) ?? 0 }
        }
    }
}

/// Every error of HartCore: one message that says what is wrong and, where it helps, what is allowed.
public struct HartError: LocalizedError, CustomStringConvertible, Equatable {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var errorDescription: String? { message }
    public var description: String { message }
}
