// The ShapesWorld generator: scenes, referring expressions and description samples,
// deterministic from a seed.
//
// Sample `index` of split `s` is made from its own Philox stream
// (seed, stream = s.rawValue << 40 | index), so samples are independent of each other, of the
// split sizes and of the order they are asked for; the splits never share a stream.
//
// A scene: width and height in 72…160 px, never square (|w − h| ≥ 12); a grey background with
// a per-scene level, a tint, sinusoidal stripes and per-pixel noise; 2–5 objects with distinct
// (size, colour, shape) triples, placed entirely inside the image, every object keeping ≥ 55% of
// its own area visible after occlusion (placements are retried until this holds).
// Colours and shapes of later objects reuse earlier ones with probability 0.35 each, so that
// plural phrases occur.

import Tensors

/// A data split.
public enum Split: UInt64, Sendable, CaseIterable {
    case train = 0, val = 1, test = 2
}

/// A sample for grounding and for TinyVLM pretraining: a scene and the phrases of its
/// description, in caption order (phrase k has mask id k).
public struct DescriptionSample: Sendable {
    public let scene: Scene
    public let phrases: [ReferringExpression]

    /// The caption words: phrase words, each phrase followed by ".", as F-LMM's
    /// RefCOCO2PNG(concat=True) does.
    public var words: [String] { phrases.flatMap { $0.words + ["."] } }

    /// Mask id per caption word: k for the words of phrase k, −1 for ".".
    public var wordMaskIds: [Int] {
        phrases.enumerated().flatMap { k, p in [Int](repeating: k, count: p.words.count) + [-1] }
    }

    /// Ground-truth masks, one per phrase (unions for plural phrases), at the original size.
    public var masks: [Mask] { phrases.map { $0.mask(in: scene) } }
}

/// The generator.
public struct ShapesWorld: Sendable {
    public let seed: UInt64
    /// Number of samples per split.
    public let counts: [Split: Int]

    public init(seed: UInt64 = 0, train: Int = 4000, val: Int = 200, test: Int = 200) {
        self.seed = seed
        counts = [.train: train, .val: val, .test: test]
    }

    public func count(_ split: Split) -> Int { counts[split]! }

    /// The random stream of sample `index` of `split`.
    public func rng(_ split: Split, _ index: Int) -> PhiloxRNG {
        precondition(index >= 0 && index < count(split), "ShapesWorld: index \(index) outside \(split) (\(count(split)) samples)")
        return PhiloxRNG(seed: seed, stream: split.rawValue << 40 | UInt64(index))
    }

    /// Sample `index` of `split`: its scene and description.
    public func sample(_ split: Split, _ index: Int) -> DescriptionSample {
        var rng = rng(split, index)
        let scene = ShapesWorld.makeScene(rng: &rng)
        let phrases = ShapesWorld.describe(scene, rng: &rng)
        return DescriptionSample(scene: scene, phrases: phrases)
    }

    // MARK: scenes

    /// A random scene.
    public static func makeScene(rng: inout PhiloxRNG) -> Scene {
        var w = 72 + rng.nextInt(below: 89), h = 72 + rng.nextInt(below: 89)
        while abs(w - h) < 12 {
            w = 72 + rng.nextInt(below: 89)
            h = 72 + rng.nextInt(below: 89)
        }
        let background = makeBackground(height: h, width: w, rng: &rng)
        let n = 2 + rng.nextInt(below: 4)
        while true {
            if let objects = placeObjects(n, height: h, width: w, rng: &rng) {
                return Scene.render(background: background, objects: objects)
            }
        }
    }

    /// Grey background: level 85…164, tint ±8 per channel, stripes of amplitude 10 along a
    /// random direction with period 6…24 px, and per-pixel noise in [−9, 9]. Channels of a
    /// pixel differ by at most 2·8 + 2·9 = 34.
    static func makeBackground(height h: Int, width w: Int, rng: inout PhiloxRNG) -> RGBImage {
        let level = 85 + rng.nextInt(below: 80)
        let tint = (0..<3).map { _ in rng.nextInt(below: 17) - 8 }
        // Stripe direction from a small integer table (no libm): (dx, dy) per period.
        let directions: [(Int, Int)] = [(1, 0), (0, 1), (1, 1), (1, -1), (2, 1), (1, 2), (2, -1), (1, -2)]
        let (dx, dy) = directions[rng.nextInt(below: directions.count)]
        let period = 6 + rng.nextInt(below: 19)
        var px = [UInt8](repeating: 0, count: h * w * 3)
        for i in 0..<h {
            for j in 0..<w {
                // Triangle wave in [−10, 10] along (dx, dy).
                let t = ((j * dx + i * dy) % period + period) % period
                let tri = (4 * 10 * t) / period          // 0 … 39
                let stripe = tri < 20 ? tri - 10 : 30 - tri
                let noise = rng.nextInt(below: 19) - 9
                for c in 0..<3 {
                    px[(i * w + j) * 3 + c] = UInt8(clamping: level + tint[c] + stripe + noise)
                }
            }
        }
        return RGBImage(height: h, width: w, pixels: px)
    }

    /// Objects with distinct attribute triples, each ≥ 55% visible; nil if placement failed.
    static func placeObjects(_ n: Int, height h: Int, width w: Int, rng: inout PhiloxRNG) -> [SceneObject]? {
        let short = Double(min(h, w))
        var objects: [SceneObject] = []
        var map = [Int8](repeating: -1, count: h * w)
        var full: [Int] = []
        for _ in 0..<n {
            var placed = false
            for _ in 0..<60 {
                let shape = !objects.isEmpty && rng.nextFloat() < 0.35
                    ? objects[rng.nextInt(below: objects.count)].shape
                    : ShapeKind.allCases[rng.nextInt(below: ShapeKind.allCases.count)]
                let color = !objects.isEmpty && rng.nextFloat() < 0.35
                    ? objects[rng.nextInt(below: objects.count)].color
                    : ShapeColor.allCases[rng.nextInt(below: ShapeColor.allCases.count)]
                let size: SizeClass = rng.nextInt(below: 2) == 0 ? .small : .large
                let frac = size == .small ? 0.07 + 0.03 * rng.nextDouble() : 0.14 + 0.05 * rng.nextDouble()
                let r = frac * short
                let cx = r + 1 + (Double(w) - 2 * r - 2) * rng.nextDouble()
                let cy = r + 1 + (Double(h) - 2 * r - 2) * rng.nextDouble()
                let o = SceneObject(shape: shape, color: color, size: size, cx: cx, cy: cy, radius: r)
                if objects.contains(where: { $0.shape == shape && $0.color == color && $0.size == size }) { continue }
                // Paint it on a copy of the map and check every object's visibility.
                var trial = map
                let (r0, r1, c0, c1) = o.boundingRows(height: h, width: w)
                for i in r0..<r1 { for j in c0..<c1 where o.covers(row: i, col: j) { trial[i * w + j] = Int8(objects.count) } }
                let cov = o.coverage(height: h, width: w)
                var visible = [Int](repeating: 0, count: objects.count + 1)
                for v in trial where v >= 0 { visible[Int(v)] += 1 }
                let fulls = full + [cov]
                if zip(visible, fulls).allSatisfy({ 100 * $0 >= 55 * $1 && $0 >= 12 }) {
                    objects.append(o)
                    full.append(cov)
                    map = trial
                    placed = true
                    break
                }
            }
            if !placed { return objects.count >= 2 ? objects : nil }
        }
        return objects
    }

    // MARK: expressions

    /// Descriptor templates for attribute phrases, from the shortest.
    static func descriptors(of o: SceneObject) -> [Descriptor] {
        [Descriptor(shape: o.shape), Descriptor(color: o.color, shape: o.shape), Descriptor(size: o.size, shape: o.shape),
         Descriptor(color: o.color), Descriptor(size: o.size, color: o.color),
         Descriptor(size: o.size, color: o.color, shape: o.shape)]
    }

    /// Every attribute phrase that refers to exactly object `k`.
    public static func attributePhrases(_ k: Int, in objects: [SceneObject]) -> [ReferringExpression] {
        descriptors(of: objects[k]).compactMap { d in
            let words = ["the"] + d.words(plural: false)
            return ExpressionInterpreter.resolve(words, in: objects) == [k]
                ? ReferringExpression(kind: .attribute, words: words, targets: [k]) : nil
        }
    }

    /// Every relational phrase "A rel B" that refers to exactly object `k`, where the A part
    /// alone is ambiguous (otherwise the relation would add nothing) and B is an attribute
    /// phrase of another object.
    public static func relationalPhrases(_ k: Int, in objects: [SceneObject]) -> [ReferringExpression] {
        var out: [ReferringExpression] = []
        for dA in descriptors(of: objects[k]) {
            let aWords = ["the"] + dA.words(plural: false)
            if ExpressionInterpreter.resolve(aWords, in: objects) != nil { continue }
            for b in objects.indices where b != k {
                for bPhrase in attributePhrases(b, in: objects) {
                    for rel in Relation.allCases {
                        let words = aWords + rel.words + bPhrase.words
                        if ExpressionInterpreter.resolve(words, in: objects) == [k] {
                            out.append(ReferringExpression(kind: .relational, words: words, targets: [k]))
                        }
                    }
                }
            }
        }
        return out
    }

    /// Every plural phrase ("the two green shapes", "the three circles", "the two red circles")
    /// whose referents are ≥ 2 objects sharing a colour, a shape, or both.
    public static func pluralPhrases(in objects: [SceneObject]) -> [ReferringExpression] {
        var out: [ReferringExpression] = []
        var seen = Set<[Int]>()
        var groups: [Descriptor] = []
        for c in ShapeColor.allCases { groups.append(Descriptor(color: c)) }
        for s in ShapeKind.allCases { groups.append(Descriptor(shape: s)) }
        for c in ShapeColor.allCases { for s in ShapeKind.allCases { groups.append(Descriptor(color: c, shape: s)) } }
        for d in groups {
            let members = objects.indices.filter { d.matches(objects[$0]) }
            guard members.count >= 2, seen.insert(members).inserted else { continue }
            let words = ["the", ExpressionInterpreter.numberWords[members.count - 2]] + d.words(plural: true)
            if ExpressionInterpreter.resolve(words, in: objects) == members {
                out.append(ReferringExpression(kind: .plural, words: words, targets: members))
            }
        }
        return out
    }

    /// A description: one phrase per object (relational with probability 0.3 when one exists,
    /// otherwise an attribute phrase chosen uniformly among the unambiguous ones), plus one
    /// plural phrase with probability 0.5 when one exists; the phrases are shuffled.
    public static func describe(_ scene: Scene, rng: inout PhiloxRNG) -> [ReferringExpression] {
        let objects = scene.objects
        var phrases: [ReferringExpression] = []
        for k in objects.indices {
            let attrs = attributePhrases(k, in: objects)
            let rels = relationalPhrases(k, in: objects)
            if !rels.isEmpty && rng.nextFloat() < 0.3 {
                phrases.append(rels[rng.nextInt(below: rels.count)])
            } else {
                precondition(!attrs.isEmpty, "ShapesWorld.describe: object \(k) has no unambiguous attribute phrase")
                phrases.append(attrs[rng.nextInt(below: attrs.count)])
            }
        }
        let plurals = pluralPhrases(in: objects)
        if !plurals.isEmpty && rng.nextFloat() < 0.5 { phrases.append(plurals[rng.nextInt(below: plurals.count)]) }
        return rng.permutation(phrases.count).map { phrases[$0] }
    }
}
