// swift-tools-version:5.10
// HART on iOS: the Core ML export driven by its manifest.json, with the same loop and RNG as
// hart/loop.py. Open this folder in Xcode 16+ (File > Open), add a Core ML export as a resource folder
// named "model" (see README.md), pick an iOS 18 device and run HartDemo. `swift test` replays the
// golden trace (hart/assets/tiny/golden_trace.safetensors) through the loop with a fake graph runner.
import PackageDescription

let package = Package(
    name: "HartDemo",
    // iOS 17 / macOS 14 for the loop and its test; the Core ML runner and the app are @available(iOS 18, macOS 15)
    // (MLState, multifunction models).
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "HartCore", targets: ["HartCore"]),
        .executable(name: "HartDemo", targets: ["HartDemo"]),
    ],
    targets: [
        .target(name: "HartCore"),
        .executableTarget(name: "HartDemo", dependencies: ["HartCore"], resources: [.copy("model")]),
        // reads ../../../../hart/assets/tiny/golden_trace.safetensors and tiny_manifest.json next to the
        // test by #filePath (no copy of the 2 MB trace)
        .testTarget(name: "HartCoreTests", dependencies: ["HartCore"], exclude: ["tiny_manifest.json"]),
    ]
)
