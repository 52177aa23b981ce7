// One free-form phrase for the single-image demo (`flmm ground`): the user's words become the
// caption "<words> ." with the words as phrase 0, as F-LMM's RefCOCO2PNG(concat=True) captions
// a sample with one phrase. A word outside ShapesWorld's vocabulary is a `TokenizerError`, whose
// message lists the vocabulary.

/// A phrase written by a user, ready for TinyVLM.
public struct GroundingPhrase: Sendable, Equatable {
    /// The phrase's words (without the final ".").
    public let words: [String]
    /// The TinyVLM input: <bos>, image tokens, prompt, the words (mask id 0), ".", <eos>.
    public let sequence: VLMSequence

    /// Tokenizes `text` (a trailing "." is allowed and dropped). Throws `TokenizerError` for an
    /// unknown word, `GroundingPhraseError` for an empty phrase or one with "." or ":" inside.
    public init(_ text: String, tokenizer: Tokenizer = .shapesWorld, imageTokens: Int) throws {
        var w = Tokenizer.words(text.lowercased())
        while w.last == "." { w.removeLast() }
        guard !w.isEmpty else { throw GroundingPhraseError(text: text, reason: "the phrase has no words") }
        if let bad = w.first(where: { $0 == "." || $0 == ":" }) {
            throw GroundingPhraseError(text: text, reason: "'\(bad)' inside the phrase; give one phrase")
        }
        _ = try tokenizer.encode(words: w)
        words = w
        sequence = try VLMSequence(tokenizer: tokenizer, imageTokens: imageTokens, captionWords: w + ["."],
                                   captionMaskIds: [Int](repeating: 0, count: w.count) + [-1])
    }
}

/// A phrase the demo cannot use.
public struct GroundingPhraseError: Error, CustomStringConvertible, Equatable {
    public let text: String
    public let reason: String
    public var description: String { "phrase '\(text)': \(reason)" }
}
