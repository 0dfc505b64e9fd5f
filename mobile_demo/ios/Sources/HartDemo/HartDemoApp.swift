// A one-screen SwiftUI app: prompt, seed, Generate; shows the coarse-to-fine previews, then the image.
import CoreGraphics
import CoreML
import HartCore
import SwiftUI

@main
struct HartDemoApp: App {
    var body: some Scene { WindowGroup { ContentView() } }
}

struct ContentView: View {
    @State private var prompt = "a large red circle in the center on a gray background"
    @State private var seed = 0
    @State private var image: CGImage?
    @State private var status = "Loading the model…"
    @State private var generator: HartGenerator?

    var body: some View {
        VStack(spacing: 12) {
            TextField("Prompt", text: $prompt).textFieldStyle(.roundedBorder)
            Stepper("Seed \(seed)", value: $seed, in: 0...1_000_000)
            Button("Generate") { Task { await run() } }.disabled(generator == nil).buttonStyle(.borderedProminent)
            Text(status).font(.footnote).foregroundStyle(.secondary)
            if let image { Image(decorative: image, scale: 1).interpolation(.none).resizable().scaledToFit() }
            Spacer()
        }
        .padding()
        .task {
            do {
                generator = try await HartGenerator(folder: Bundle.module.url(forResource: "model", withExtension: nil)!)
                status = "Ready."
            } catch { status = "Could not load the model: \(error.localizedDescription)" }
        }
    }

    func run() async {
        guard let generator else { return }
        let started = Date()
        do {
            let result = try await generator.generate(prompt: prompt, seed: UInt64(seed)) { si, _ in
                await MainActor.run { status = "Scale \(si + 1) of \(generator.manifest.schedule.patch_nums.count)…" }
            }
            image = cgImage(result)
            status = String(format: "Done in %.2f s.", Date().timeIntervalSince(started))
        } catch { status = error.localizedDescription }
    }

    /// [1, 3, H, W] in [0, 1] -> an RGB CGImage.
    func cgImage(_ array: MLMultiArray) -> CGImage? {
        let values = MLShapedArray<Float>(converting: array).scalars
        let h = array.shape[2].intValue, w = array.shape[3].intValue
        var bytes = [UInt8](repeating: 255, count: h * w * 4)
        for i in 0..<(h * w) { for c in 0..<3 {
            bytes[4 * i + c] = UInt8((min(max(values[c * h * w + i], 0), 1) * 255).rounded())
        } }
        return CGImage(width: w, height: h, bitsPerComponent: 8, bitsPerPixel: 32, bytesPerRow: 4 * w,
                       space: CGColorSpaceCreateDeviceRGB(), bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
                       provider: CGDataProvider(data: Data(bytes) as CFData)!, decode: nil, shouldInterpolate: false,
                       intent: .defaultIntent)
    }
}
