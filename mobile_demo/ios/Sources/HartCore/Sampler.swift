// Token sampling by inverse CDF (hart/portable/sampling.py): temperature, top-k, HART's top-p.
import Foundation

public func sampleToken(_ logits: [Float], u: Float, topK: Int, topP: Double, temperature: Float) -> Int {
    var z = logits.map { Double(temperature == 1 ? $0 : $0 / temperature) }
    if topK > 0 && topK < z.count {
        let kth = z.sorted()[z.count - topK]
        z = z.map { $0 < kth ? -.infinity : $0 }
    }
    if topP > 0 {
        let order = z.indices.sorted { z[$0] == z[$1] ? $0 < $1 : z[$0] < z[$1] }
        let top = z[order.last!]
        let total = order.reduce(0.0) { $0 + exp(z[$1] - top) }
        var running = 0.0
        for j in order.dropLast() {
            running += exp(z[j] - top) / total
            if running <= 1 - topP { z[j] = -.infinity }
        }
    }
    let maximum = z.max()!
    var cdf = [Double](), sum = 0.0
    for value in z { sum += exp(value - maximum); cdf.append(sum) }
    let target = Double(u) * sum
    return cdf.firstIndex { $0 > target } ?? z.count - 1
}
