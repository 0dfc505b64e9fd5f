// swift-tools-version:5.10
// HART on iOS: the Core ML export driven by its manifest.json, with the same loop and RNG as
// hart/runtime/loop.py. Open this folder in Xcode 16+ (File > Open), add a Core ML export as a
// resource folder named "model" (see ../README.md), pick an iOS 18 device and run HartDemo.
import PackageDescription

let package = Package(
    name: "HartDemo",
    platforms: [.iOS(.v18), .macOS(.v15)],
    products: [.executable(name: "HartDemo", targets: ["HartDemo"])],
    targets: [
        .target(name: "HartCore"),
        .executableTarget(name: "HartDemo", dependencies: ["HartCore"], resources: [.copy("model")]),
    ]
)
