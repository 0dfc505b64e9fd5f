// A one-screen SwiftUI app: prompt, seed, Generate; shows the coarse-to-fine progress, then the image.
// Needs Xcode 16 and an iOS 18 / macOS 15 device (Core ML state); elsewhere (Linux, older SDKs) the
// target builds to a stub so that `swift test` still builds the package.
#if canImport(SwiftUI) && canImport(CoreML) && compiler(>=6.0)
import CoreGraphics
import Foundation
import HartCore
import SwiftUI

@main
struct HartDemoApp: App {
    var body: some Scene {
        WindowGroup {
            if #available(iOS 18.0, macOS 15.0, *) {
                ContentView()
            } else {
                Text("HART needs iOS 18 or macOS 15 (Core ML state).").padding()
            }
        }
    }
}

@available(iOS 18.0, macOS 15.0, *)
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
                guard let folder = Bundle.module.url(forResource: "model", withExtension: nil) else {
                    status = "No model folder in the app bundle."
                    return
                }
                generator = try await HartGenerator(folder: folder)
                status = "Ready."
            } catch { status = "Could not load the model: \(error.localizedDescription)" }
        }
    }

    func run() async {
        guard let generator else { return }
        let started = Date()
        let scales = generator.manifest.schedule.patch_nums.count
        do {
            let result = try await generator.generate(prompt: prompt, seed: UInt64(seed)) { si, _ in
                await MainActor.run { status = "Scale \(si + 1) of \(scales)…" }
            }
            image = cgImage(result.image)
            status = String(format: "Done in %.2f s.", Date().timeIntervalSince(started))
        } catch { status = error.localizedDescription }
    }

    /// [1, 3, H, W] in [0, 1] -> an RGB CGImage (8-bit by the portable rule: round half to even).
    func cgImage(_ tensor: Tensor) -> CGImage? {
        guard let rgba = try? Pixels.rgba(tensor), let provider = CGDataProvider(data: Data(rgba.bytes) as CFData) else {
            return nil
        }
        return CGImage(width: rgba.width, height: rgba.height, bitsPerComponent: 8, bitsPerPixel: 32,
                       bytesPerRow: 4 * rgba.width, space: CGColorSpaceCreateDeviceRGB(),
                       bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
                       provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)
    }
}
#else
@main
enum HartDemoApp {
    static func main() {
        print("HartDemo needs SwiftUI and Core ML with the iOS 18 / macOS 15 SDK (Xcode 16); HartCore has the loop.")
    }
}
#endif
