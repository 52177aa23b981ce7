import XCTest
import Tensors

final class SmokeTests: XCTestCase {
    func testAddBackward() {
        let a = Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6], requiresGrad: true)
        let b = Tensor(shape: [3], data: [10, 20, 30], requiresGrad: true)
        let y = (a * b + a).sum()
        XCTAssertEqual(y.item, 481)  // Σ a·b = 10+40+90+40+100+180 = 460, plus Σ a = 21
        y.backward()
        XCTAssertEqual(a.grad!.data, [11, 21, 31, 11, 21, 31])
        XCTAssertEqual(b.grad!.data, [5, 7, 9])
    }
}
