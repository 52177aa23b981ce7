// Word-level tokenizer with ShapesWorld's fixed vocabulary, and the TinyVLM input sequence.
//
// Text is split on spaces; "." and ":" are separate tokens even when attached to a word.
// The vocabulary is fixed (ids never change): special tokens first, then punctuation, prompt
// words, and the words of the referring-expression grammar.
//
// TinyVLM sequence (DeepSeek-VL-like, F-LMM's layout with the image first):
//   [<bos>] [<image> × G²] prompt words ("describe the image :") [caption words] [<eos>]
// Mask ids: −1 for <bos>, the image tokens, the prompt, "." and <eos>; phrase k's words get k.

/// A word outside the vocabulary.
public struct TokenizerError: Error, CustomStringConvertible, Equatable {
    public let word: String
    public let vocabulary: [String]
    public var description: String {
        "Tokenizer: unknown word '\(word)'; the vocabulary is: \(vocabulary.joined(separator: " "))"
    }
}

/// The fixed word-level tokenizer.
public struct Tokenizer: Sendable {
    public let vocabulary: [String]
    let ids: [String: Int]

    public init(vocabulary: [String]) {
        precondition(Set(vocabulary).count == vocabulary.count, "Tokenizer: duplicate words in the vocabulary")
        self.vocabulary = vocabulary
        var ids: [String: Int] = [:]
        for (i, w) in vocabulary.enumerated() { ids[w] = i }
        self.ids = ids
    }

    /// ShapesWorld's vocabulary.
    public static let shapesWorld: Tokenizer = {
        var v = ["<pad>", "<bos>", "<eos>", "<image>", ".", ":", "describe", "image", "the", "of",
                 "left", "right", "above", "below", "shape", "shapes"]
        v += ExpressionInterpreter.numberWords
        v += SizeClass.allCases.map(\.name)
        v += ShapeColor.allCases.map(\.name)
        v += ShapeKind.allCases.map(\.noun)
        v += ShapeKind.allCases.map(\.plural)
        return Tokenizer(vocabulary: v)
    }()

    public var count: Int { vocabulary.count }
    public var padId: Int { ids["<pad>"]! }
    public var bosId: Int { ids["<bos>"]! }
    public var eosId: Int { ids["<eos>"]! }
    public var imageId: Int { ids["<image>"]! }

    /// The id of one word.
    public func id(_ word: String) throws -> Int {
        guard let i = ids[word] else { throw TokenizerError(word: word, vocabulary: vocabulary) }
        return i
    }

    /// Splits `text` into words: on spaces, with "." and ":" split off as their own tokens.
    public static func words(_ text: String) -> [String] {
        var out: [String] = []
        for piece in text.split(separator: " ") {
            var cur = ""
            for ch in piece {
                if ch == "." || ch == ":" {
                    if !cur.isEmpty { out.append(cur); cur = "" }
                    out.append(String(ch))
                } else {
                    cur.append(ch)
                }
            }
            if !cur.isEmpty { out.append(cur) }
        }
        return out
    }

    /// Ids of the words of `text`. Throws `TokenizerError` on a word outside the vocabulary.
    public func encode(_ text: String) throws -> [Int] { try encode(words: Tokenizer.words(text)) }

    public func encode(words: [String]) throws -> [Int] { try words.map { try id($0) } }

    /// Words of `ids` joined by spaces (" ." and " :" kept as separate words).
    public func decode(_ ids: [Int]) -> String {
        ids.map { (0..<count).contains($0) ? vocabulary[$0] : "<\($0)?>" }.joined(separator: " ")
    }

    /// The prompt between the image and the caption.
    public static let promptWords = ["describe", "the", "image", ":"]
}

/// A TinyVLM input: token ids with image placeholders, and F-LMM's mask ids.
public struct VLMSequence: Sendable, Equatable {
    /// [S] token ids; image positions hold `<image>`.
    public let ids: [Int]
    /// [S] mask ids (−1 outside phrases).
    public let maskIds: [Int]
    /// Position of the first image token, and how many there are (G²).
    public let imageStart: Int, imageCount: Int
    /// Position of the first caption token (after the prompt).
    public let textStart: Int

    public var count: Int { ids.count }

    /// `<bos>`, G² image tokens, the prompt, the caption words with their mask ids, and `<eos>`
    /// when `eos` is set.
    public init(tokenizer: Tokenizer, imageTokens: Int, captionWords: [String], captionMaskIds: [Int],
                eos: Bool = true) throws {
        precondition(captionWords.count == captionMaskIds.count,
                     "VLMSequence: \(captionWords.count) words but \(captionMaskIds.count) mask ids")
        let prompt = try tokenizer.encode(words: Tokenizer.promptWords)
        let caption = try tokenizer.encode(words: captionWords)
        var ids = [tokenizer.bosId] + [Int](repeating: tokenizer.imageId, count: imageTokens) + prompt
        var mask = [Int](repeating: -1, count: ids.count)
        imageStart = 1
        imageCount = imageTokens
        textStart = ids.count
        ids += caption
        mask += captionMaskIds
        if eos {
            ids.append(tokenizer.eosId)
            mask.append(-1)
        }
        self.ids = ids
        maskIds = mask
    }

    /// The sequence of a description sample.
    public init(tokenizer: Tokenizer, imageTokens: Int, sample: DescriptionSample) throws {
        try self.init(tokenizer: tokenizer, imageTokens: imageTokens, captionWords: sample.words,
                      captionMaskIds: sample.wordMaskIds)
    }
}
