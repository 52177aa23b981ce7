// Referring expressions of ShapesWorld and their interpreter.
//
// Grammar (words are vocabulary words):
//   expr     := "the" [number] [size] [colour] noun [relation "the" [size] [colour] noun]
//   number   := "two" | "three" | "four" | "five"       (plural: the noun must be plural)
//   noun     := circle | square | … | "shape"   (singular) ;  circles | … | "shapes" (plural)
//   relation := "left" "of" | "right" "of" | "above" | "below"
// Meaning:
//   - attribute phrase: the objects whose attributes match; it refers iff exactly one matches.
//   - plural phrase: the objects that match; it refers iff exactly `number` match (mask = union).
//   - relational phrase "A rel B": B must match exactly one object b; the referent is the one
//     object matching A (other than b) that stands in `rel` to b. Relations compare centres
//     with a margin: "a left of b" iff a.cx < b.cx − m, where m = 0.25·(r_a + r_b) + 2 px.
//     A candidate within the margin (neither clearly left nor right) makes the phrase unclear,
//     and an unclear phrase refers to nothing.
// `resolve` returns the referred objects, or nil when the phrase does not refer unambiguously.

/// How a phrase picks its objects.
public enum ExpressionKind: String, Sendable, CaseIterable {
    case attribute, relational, plural
}

/// Spatial relations between object centres.
public enum Relation: Int, Sendable, CaseIterable {
    case leftOf, rightOf, above, below

    /// The words of the relation ("left of").
    public var words: [String] { [["left", "of"], ["right", "of"], ["above"], ["below"]][rawValue] }

    /// The relation's sign for a → b: +1 clearly holds, −1 clearly the opposite, 0 unclear.
    public func holds(_ a: SceneObject, _ b: SceneObject) -> Int {
        let m = 0.25 * (a.radius + b.radius) + 2
        let d: Double
        switch self {
        case .leftOf: d = b.cx - a.cx
        case .rightOf: d = a.cx - b.cx
        case .above: d = b.cy - a.cy
        case .below: d = a.cy - b.cy
        }
        return d > m ? 1 : (d < -m ? -1 : 0)
    }
}

/// An attribute filter: optional size and colour, and a shape (nil = the noun "shape(s)").
public struct Descriptor: Sendable, Equatable, Hashable {
    public var size: SizeClass?
    public var color: ShapeColor?
    public var shape: ShapeKind?

    public init(size: SizeClass? = nil, color: ShapeColor? = nil, shape: ShapeKind? = nil) {
        self.size = size
        self.color = color
        self.shape = shape
    }

    public func matches(_ o: SceneObject) -> Bool {
        (size == nil || size == o.size) && (color == nil || color == o.color) && (shape == nil || shape == o.shape)
    }

    /// Words after "the" (and the number): [size] [colour] noun.
    public func words(plural: Bool) -> [String] {
        var w: [String] = []
        if let size { w.append(size.name) }
        if let color { w.append(color.name) }
        if let shape { w.append(plural ? shape.plural : shape.noun) } else { w.append(plural ? "shapes" : "shape") }
        return w
    }
}

/// A referring expression with its referents (indices into the scene's objects).
public struct ReferringExpression: Sendable, Equatable {
    public let kind: ExpressionKind
    public let words: [String]
    /// Referred objects, ascending.
    public let targets: [Int]

    public init(kind: ExpressionKind, words: [String], targets: [Int]) {
        self.kind = kind
        self.words = words
        self.targets = targets
    }

    public var text: String { words.joined(separator: " ") }

    /// Its mask in `scene`: the union of the targets' visible masks.
    public func mask(in scene: Scene) -> Mask { scene.mask(union: targets) }
}

/// Parses and evaluates ShapesWorld phrases against a scene.
public enum ExpressionInterpreter {
    static let numbers = ["two": 2, "three": 3, "four": 4, "five": 5]
    public static let numberWords = ["two", "three", "four", "five"]

    /// The objects `words` refers to in `objects`, ascending; nil if it is malformed,
    /// ambiguous, unclear or refers to nothing.
    public static func resolve(_ words: [String], in objects: [SceneObject]) -> [Int]? {
        var i = 0
        guard let (countA, descA, pluralA) = parseNounPhrase(words, &i) else { return nil }
        let matchA = objects.indices.filter { descA.matches(objects[$0]) }
        if i == words.count {
            if let n = countA { return pluralA && matchA.count == n ? matchA : nil }
            return !pluralA && matchA.count == 1 ? matchA : nil
        }
        // Relational.
        guard countA == nil, !pluralA, let rel = parseRelation(words, &i),
              let (countB, descB, pluralB) = parseNounPhrase(words, &i), countB == nil, !pluralB,
              i == words.count else { return nil }
        let matchB = objects.indices.filter { descB.matches(objects[$0]) }
        guard matchB.count == 1 else { return nil }
        let b = matchB[0]
        var hits: [Int] = []
        for a in matchA where a != b {
            switch rel.holds(objects[a], objects[b]) {
            case 1: hits.append(a)
            case 0: return nil
            default: break
            }
        }
        return hits.count == 1 ? hits : nil
    }

    /// "the" [number] [size] [colour] noun.
    static func parseNounPhrase(_ w: [String], _ i: inout Int) -> (Int?, Descriptor, Bool)? {
        guard i < w.count, w[i] == "the" else { return nil }
        i += 1
        var count: Int?
        if i < w.count, let n = numbers[w[i]] { count = n; i += 1 }
        var d = Descriptor()
        if i < w.count, let s = SizeClass.allCases.first(where: { $0.name == w[i] }) { d.size = s; i += 1 }
        if i < w.count, let c = ShapeColor.allCases.first(where: { $0.name == w[i] }) { d.color = c; i += 1 }
        guard i < w.count else { return nil }
        let noun = w[i]
        i += 1
        if noun == "shape" { return (count, d, false) }
        if noun == "shapes" { return (count, d, true) }
        if let s = ShapeKind.allCases.first(where: { $0.noun == noun }) { d.shape = s; return (count, d, false) }
        if let s = ShapeKind.allCases.first(where: { $0.plural == noun }) { d.shape = s; return (count, d, true) }
        return nil
    }

    static func parseRelation(_ w: [String], _ i: inout Int) -> Relation? {
        for r in Relation.allCases {
            let rw = r.words
            if i + rw.count <= w.count && Array(w[i..<(i + rw.count)]) == rw {
                i += rw.count
                return r
            }
        }
        return nil
    }
}
