// The app's entry point: a Core ML export folder (manifest.json + packages) driven by HartLoop, the same
// loop and RNG as hart/loop.py, through CoreMLRunner.
#if canImport(CoreML) && compiler(>=6.0)
import CoreML
import Foundation

@available(iOS 18.0, macOS 15.0, *)
public final class HartGenerator {
    public let manifest: Manifest
    public let runner: CoreMLRunner

    public init(folder: URL, computeUnits: MLComputeUnits = .all) async throws {
        let manifest = try Manifest.load(from: folder)
        self.manifest = manifest
        self.runner = try await CoreMLRunner(folder: folder, scales: manifest.schedule.patch_nums.count,
                                             computeUnits: computeUnits)
    }

    /// One image. `options` override the manifest's sampling defaults (cfg, topK, topP, temperature,
    /// residual, residualGuidance); `onScale(si, f_hat)` sees the running latent after every scale.
    /// Pixels.rgba(result.image) gives its 8-bit pixels.
    public func generate(prompt: String, seed: UInt64, options: SamplingOptions = SamplingOptions(),
                         onScale: ((Int, Tensor) async throws -> Void)? = nil) async throws -> GenerationResult {
        try await HartLoop.generate(manifest: manifest, runner: runner, prompt: prompt, seed: seed, options: options,
                                    onScale: onScale)
    }
}
#endif
