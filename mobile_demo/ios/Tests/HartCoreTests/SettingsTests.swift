// Sampling settings (resolveSettings in mobile_demo/web/hart_runtime.mjs), tokenization and 8-bit pixels.
import Foundation
import XCTest
@testable import HartCore

final class SettingsTests: XCTestCase {
    func manifest() throws -> Manifest { try Manifest.load(file: manifestURL) }

    func testDefaultsAndOverrides() throws {
        let m = try manifest()
        let defaults = try SamplingSettings(manifest: m)
        XCTAssertEqual(defaults.cfg, 2.0)
        XCTAssertEqual(defaults.topK, [0, 0, 0, 0, 0, 0])
        XCTAssertEqual(defaults.topP, 0)
        XCTAssertEqual(defaults.temperature, 1)
        XCTAssertEqual(defaults.residualGuidance, 0.15)
        XCTAssertTrue(defaults.residual)

        let every = try SamplingSettings(manifest: m, options: SamplingOptions(topK: .every(40)))
        XCTAssertEqual(every.topK, [Int](repeating: 40, count: 6))

        let options = SamplingOptions(cfg: 3, topK: .perScale([0, 3, 10, 40, 100, 200]), topP: 0.9, temperature: 0.8,
                                      residual: false, residualGuidance: 0.5)
        let overridden = try SamplingSettings(manifest: m, options: options)
        XCTAssertEqual(overridden.cfg, 3)
        XCTAssertEqual(overridden.topK, [0, 3, 10, 40, 100, 200])
        XCTAssertEqual(overridden.topP, 0.9)
        XCTAssertEqual(overridden.temperature, 0.8)
        XCTAssertFalse(overridden.residual)
        XCTAssertEqual(overridden.residualGuidance, 0.5)
    }

    func testOutOfRangeIsOneClearError() throws {
        let m = try manifest()
        let invalid = [SamplingOptions(cfg: -1), SamplingOptions(topK: .every(-1)), SamplingOptions(topK: .perScale([1, 2])),
                       SamplingOptions(topP: 1), SamplingOptions(topP: -0.1), SamplingOptions(temperature: 0),
                       SamplingOptions(residualGuidance: -0.5)]
        for options in invalid {
            XCTAssertThrowsError(try SamplingSettings(manifest: m, options: options)) { error in
                let message = (error as? HartError)?.message ?? "\(error)"
                XCTAssertTrue(message.hasPrefix("invalid sampling settings: cfg "), message)
            }
        }
        XCTAssertThrowsError(try SamplingSettings(manifest: m, options: SamplingOptions(temperature: .infinity))) { error in
            XCTAssertEqual((error as? HartError)?.message, "temperature must be a finite number (got inf)")
        }
        XCTAssertThrowsError(try SamplingSettings(manifest: m, options: SamplingOptions(cfg: .nan))) { error in
            XCTAssertEqual((error as? HartError)?.message, "cfg must be a finite number (got nan)")
        }
    }

    func testTokenize() throws {
        let m = try manifest()
        let (ids, mask, length) = try m.tokenize("A large RED circle, on a blue background!")
        XCTAssertEqual(length, 8)
        XCTAssertEqual(ids.count, m.text.max_tokens)
        XCTAssertEqual(mask, [Int64](repeating: 1, count: 8) + [Int64](repeating: 0, count: m.text.max_tokens - 8))
        XCTAssertEqual(ids[0], Int64(m.text.vocab.firstIndex(of: "a")! + 2))
        XCTAssertThrowsError(try m.tokenize("a purple zebra and a purple yak")) { error in
            let message = (error as? HartError)?.message ?? ""
            XCTAssertTrue(message.hasPrefix("the prompt has unknown word(s) 'yak', 'zebra'; this model knows: "), message)
        }
        XCTAssertThrowsError(try m.tokenize("  42 ")) { error in
            XCTAssertTrue(((error as? HartError)?.message ?? "").hasPrefix("the prompt has no words;"))
        }
        XCTAssertThrowsError(try m.tokenize(Array(repeating: "red", count: m.text.max_tokens + 1).joined(separator: " ")))
    }

    func testEightBitRoundsHalfToEven() {
        // float32 (h / 255) * 255 is exactly h for these halves
        XCTAssertEqual(Pixels.to8bit(Float(0.5) / 255), 0)  // 0.5 -> 0
        XCTAssertEqual(Pixels.to8bit(Float(2.5) / 255), 2)  // 2.5 -> 2 (JavaScript's Math.round would give 3)
        XCTAssertEqual(Pixels.to8bit(Float(3.5) / 255), 4)  // 3.5 -> 4
        XCTAssertEqual(Pixels.to8bit(-1), 0)
        XCTAssertEqual(Pixels.to8bit(2), 255)
        XCTAssertEqual(Pixels.to8bit(.nan), 0)
    }
}
