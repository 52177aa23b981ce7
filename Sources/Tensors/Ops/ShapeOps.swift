// Shape ops that copy or move data: cat, narrow / crop, constant pad, index_select, expand,
// squeeze / unsqueeze, and max along a dim. Kernels: Kernels/ShapeKernels.swift.

/// `torch.cat(tensors, dim)`: concatenation along `dim`; all other sizes must agree.
public func cat(_ tensors: [Tensor], dim: Int = 0) -> Tensor {
    precondition(!tensors.isEmpty, "cat: expected a non-empty list of tensors")
    let r = tensors[0].rank
    let d = normalizedDim(dim, rank: r, op: "cat")
    for t in tensors {
        precondition(t.rank == r && t.shape.enumerated().allSatisfy { $0.offset == d || $0.element == tensors[0].shape[$0.offset] },
                     "cat: shape \(t.shape) does not match \(tensors[0].shape) outside dim \(d)")
    }
    var shape = tensors[0].shape
    shape[d] = tensors.reduce(0) { $0 + $1.shape[d] }
    let data = Kernels.cat(tensors.map(\.data), tensors.map(\.shape), dim: d)
    return record(Tensor(shape: shape, data: data), tensors, .cat(dim: d))
}

/// `F.pad(x, pad, mode='constant', value=value)`: `pad` lists (before, after) pairs from the
/// last dim backwards ([left, right, top, bottom, ...]); non-negative.
public func pad(_ x: Tensor, _ pad: [Int], value: Float = 0) -> Tensor {
    precondition(pad.count % 2 == 0 && pad.count / 2 <= x.rank, "pad: \(pad) is not (before, after) pairs for input \(x.shape)")
    precondition(pad.allSatisfy { $0 >= 0 }, "pad: negative padding \(pad) is not supported (input \(x.shape))")
    let pairs = Kernels.padPairs(pad, rank: x.rank)
    let shape = zip(x.shape, pairs).map { $0 + $1.0 + $1.1 }
    return record(Tensor(shape: shape, data: Kernels.pad(x.data, x.shape, pad: pad, value: value)), [x], .pad(pad))
}

/// Constant padding of the last two dims: `F.pad(x, (left, right, top, bottom), value=value)`.
public func pad(_ x: Tensor, _ p: (left: Int, right: Int, top: Int, bottom: Int), value: Float = 0) -> Tensor {
    pad(x, [p.left, p.right, p.top, p.bottom], value: value)
}

extension Tensor {
    /// `x.narrow(dim, start, length)` = `x[..., start:start+length, ...]` (a copy).
    public func narrow(dim: Int, start: Int, length: Int) -> Tensor {
        let d = normalizedDim(dim, rank: rank, op: "narrow")
        precondition(start >= 0 && length >= 0 && start + length <= shape[d],
                     "narrow: [\(start), \(start + length)) out of range for dim \(d) of \(shape)")
        var s = shape
        s[d] = length
        return record(Tensor(shape: s, data: Kernels.narrow(data, shape, dim: d, start: start, length: length)),
                      [self], .narrow(dim: d, start: start))
    }

    /// `x[..., top:top+height, left:left+width]` on the last two dims.
    public func crop(top: Int = 0, left: Int = 0, height: Int, width: Int) -> Tensor {
        precondition(rank >= 2, "crop: input \(shape) needs at least 2 dims")
        var y = self
        if top != 0 || height != shape[rank - 2] { y = y.narrow(dim: rank - 2, start: top, length: height) }
        if left != 0 || width != shape[rank - 1] { y = y.narrow(dim: rank - 1, start: left, length: width) }
        return y
    }

    /// `torch.index_select(x, dim, index)`: the slices `index[0], index[1], …` of `dim`, in
    /// that order (repeats allowed). The gradient scatter-adds back in index order.
    public func indexSelect(dim: Int, index: [Int]) -> Tensor {
        let d = normalizedDim(dim, rank: rank, op: "indexSelect")
        let (o, k, i) = splitAround(d)
        precondition(index.allSatisfy { $0 >= 0 && $0 < k }, "indexSelect: index out of range for dim \(d) of \(shape)")
        var s = shape
        s[d] = index.count
        return record(Tensor(shape: s, data: Kernels.indexSelect(data, outer: o, axis: k, inner: i, indices: index)),
                      [self], .indexSelect(dim: d, indices: index))
    }

    /// `torch.max(x, dim, keepdim)`: the maxima along `dim` and the first index where each
    /// occurs. The gradient goes to that index.
    public func max(dim: Int, keepDim: Bool = false) -> (values: Tensor, indices: [Int]) {
        let d = normalizedDim(dim, rank: rank, op: "max")
        let (o, k, i) = splitAround(d)
        precondition(k > 0, "max: dim \(d) of \(shape) is empty")
        let (v, ix) = Kernels.maxAlong(data, outer: o, axis: k, inner: i)
        var s = shape
        if keepDim { s[d] = 1 } else { s.remove(at: d) }
        return (record(Tensor(shape: s, data: v), [self], .maxDim(dim: d, indices: ix)), ix)
    }

    /// `x.expand(sizes)`: broadcasts size-1 dims (and new leading dims) to `sizes`; -1 keeps a
    /// size. A copy; the gradient sums back over the broadcast dims.
    public func expand(_ sizes: [Int]) -> Tensor {
        precondition(sizes.count >= rank, "expand: \(sizes) has fewer dims than \(shape)")
        let lead = sizes.count - rank
        var target = sizes
        for j in 0..<rank {
            let want = sizes[lead + j]
            target[lead + j] = want == -1 ? shape[j] : want
            precondition(shape[j] == target[lead + j] || shape[j] == 1,
                         "expand: cannot expand \(shape) to \(sizes) (dim \(lead + j))")
        }
        precondition(target[..<lead].allSatisfy { $0 >= 0 }, "expand: invalid sizes \(sizes) for \(shape)")
        if target == shape { return self }
        return record(Tensor(shape: target, data: Kernels.expand(data, shape, to: target)), [self], .expand)
    }

    /// `x.unsqueeze(dim)`: inserts a size-1 dim at `dim` (in 0...rank; negative counts from the end).
    public func unsqueeze(_ dim: Int) -> Tensor {
        let d = dim < 0 ? dim + rank + 1 : dim
        precondition(d >= 0 && d <= rank, "unsqueeze: dim \(dim) out of range for \(shape)")
        var s = shape
        s.insert(1, at: d)
        return reshape(s)
    }

    /// `x.squeeze(dim)`: removes `dim` if its size is 1 (otherwise returns the same shape).
    public func squeeze(_ dim: Int) -> Tensor {
        let d = normalizedDim(dim, rank: rank, op: "squeeze")
        guard shape[d] == 1 else { return self }
        var s = shape
        s.remove(at: d)
        return reshape(s)
    }

    /// `x.squeeze()`: removes every size-1 dim.
    public func squeeze() -> Tensor {
        let s = shape.filter { $0 != 1 }
        return s == shape ? self : reshape(s)
    }
}
