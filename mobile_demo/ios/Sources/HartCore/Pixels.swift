// Images to 8-bit pixels by the portable spec (manifest spec.image_8bit, hart.portable.spec.to_uint8):
// pixel = round_half_to_even(clip(x, 0, 1) * 255), computed in float32.
import Foundation

public struct RGBAImage: Equatable, Sendable {
    public let width: Int
    public let height: Int
    /// width * height * 4 bytes, row-major, alpha 255.
    public let bytes: [UInt8]
}

public enum Pixels {
    public static func to8bit(_ x: Float) -> UInt8 {
        if x.isNaN { return 0 }
        let value: Float = min(max(x, 0), 1) * 255  // one float32 product
        return UInt8(value.rounded(.toNearestOrEven))
    }

    /// An image [1, 3, H, W] (floats in [0, 1]) -> RGBA bytes.
    public static func rgba(_ image: Tensor) throws -> RGBAImage {
        guard image.shape.count == 4, image.shape[0] == 1, image.shape[1] == 3 else {
            throw HartError("expected an image [1, 3, H, W], got \(image.shape)")
        }
        let height = image.shape[2], width = image.shape[3], plane = width * height
        let values = image.floats
        var bytes = [UInt8](repeating: 255, count: 4 * plane)
        for i in 0..<plane {
            for channel in 0..<3 { bytes[4 * i + channel] = to8bit(values[channel * plane + i]) }
        }
        return RGBAImage(width: width, height: height, bytes: bytes)
    }
}
