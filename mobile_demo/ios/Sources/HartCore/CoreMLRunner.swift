// GraphRunner on the Core ML export (manifest `coreml.loop`): text_encoder, condition, residual and
// decoder are single-function packages; step.mlpackage has one function scale_<si> per scale with the
// KV cache as Core ML state (k_cache, v_cache: one MLState per image, passed to every scale);
// update.mlpackage has scale_<si> for si < K - 1 and final. Ids and masks are int32, guidance is [1].
// Needs the iOS 18 / macOS 15 SDK (Xcode 16: MLState, multifunction models), hence the compiler check.
#if canImport(CoreML) && compiler(>=6.0)
import CoreML
import Foundation

@available(iOS 18.0, macOS 15.0, *)
public final class CoreMLRunner: GraphRunner {
    public typealias StepState = MLState

    let graphs: [Graph: MLModel]
    let steps: [MLModel]

    /// Compiles and loads every package of FOLDER (each package compiled once, then loaded per function).
    public init(folder: URL, scales: Int, computeUnits: MLComputeUnits = .all) async throws {
        guard scales > 0 else { throw HartError("a Core ML export needs at least one scale") }
        func compile(_ package: String) async throws -> URL {
            let url = folder.appendingPathComponent("\(package).mlpackage")
            guard FileManager.default.fileExists(atPath: url.path) else {
                throw HartError("\(url.lastPathComponent) is missing from \(folder.path)")
            }
            return try await MLModel.compileModel(at: url)
        }
        func load(_ compiled: URL, _ function: String? = nil) async throws -> MLModel {
            let configuration = MLModelConfiguration()
            configuration.computeUnits = computeUnits
            configuration.functionName = function
            return try await MLModel.load(contentsOf: compiled, configuration: configuration)
        }
        var graphs: [Graph: MLModel] = [:]
        let single: [(Graph, String)] = [(.textEncoder, "text_encoder"), (.condition, "condition"),
                                         (.residual, "residual"), (.decoder, "decoder")]
        for (graph, package) in single {
            let compiled = try await compile(package)
            graphs[graph] = try await load(compiled)
        }
        let update = try await compile("update")
        for si in 0..<(scales - 1) { graphs[.update(si)] = try await load(update, "scale_\(si)") }
        graphs[.updateFinal] = try await load(update, "final")
        let step = try await compile("step")
        var steps: [MLModel] = []
        for si in 0..<scales { steps.append(try await load(step, "scale_\(si)")) }
        self.graphs = graphs
        self.steps = steps
    }

    public func makeStepState() throws -> MLState { steps[0].makeState() }

    public func step(scale: Int, _ inputs: [String: Tensor], state: MLState) async throws -> [String: Tensor] {
        guard steps.indices.contains(scale) else { throw HartError("the export has no step function scale_\(scale)") }
        let features = try Self.provider(inputs)
        let out = try await steps[scale].prediction(from: features, using: state)
        return Self.tensors(out)
    }

    public func run(_ graph: Graph, _ inputs: [String: Tensor]) async throws -> [String: Tensor] {
        guard let model = graphs[graph] else { throw HartError("the Core ML export has no graph \(graph)") }
        let features = try Self.provider(inputs)
        let out = try await model.prediction(from: features)
        return Self.tensors(out)
    }

    // ---------------------------------------------------------------------------- Tensor <-> MLMultiArray
    static func provider(_ inputs: [String: Tensor]) throws -> MLDictionaryFeatureProvider {
        var features: [String: MLFeatureValue] = [:]
        for (name, tensor) in inputs { features[name] = MLFeatureValue(multiArray: multiArray(tensor)) }
        return try MLDictionaryFeatureProvider(dictionary: features)
    }

    /// Integer tensors (ids, masks) as int32, float tensors as float32.
    static func multiArray(_ tensor: Tensor) -> MLMultiArray {
        switch tensor.storage {
        case .ints(let values):
            let scalars = values.map { Int32(truncatingIfNeeded: $0) }
            return MLMultiArray(MLShapedArray<Int32>(scalars: scalars, shape: tensor.shape))
        case .floats(let values):
            return MLMultiArray(MLShapedArray<Float>(scalars: values, shape: tensor.shape))
        }
    }

    static func tensor(_ array: MLMultiArray) -> Tensor {
        let shape = array.shape.map { $0.intValue }
        switch array.dataType {
        case .int32:
            return Tensor(ints: (0..<array.count).map { array[$0].int64Value }, shape: shape)
        default:  // float32, float16, double
            return Tensor(floats: MLShapedArray<Float>(converting: array).scalars, shape: shape)
        }
    }

    static func tensors(_ out: MLFeatureProvider) -> [String: Tensor] {
        var result: [String: Tensor] = [:]
        for name in out.featureNames {
            if let array = out.featureValue(for: name)?.multiArrayValue { result[name] = tensor(array) }
        }
        return result
    }
}
#endif
