// flmm-bench: GFLOP/s of our GEMM and of the U-Net's 3×3 convolutions, against OpenBLAS,
// on 1 and 2 threads, with the fraction of the machine's fp32 peak.
//
//   flmm-bench [--out Results/bench.nc] [--quick]
//
// Prints a table, then for every measurement one line
//   bench <name> backend=<own|openblas> threads=<n> ms=<median> gflops=<x>
// and whether each backend's results are bitwise equal on 1 and 2 threads; then the U-Net
// training-step rows (UNetBench.swift). Writes the GEMM and convolution measurements to a
// NetCDF file (--out).
//
// Peak: cores × 2 FMA units × W lanes × 2 flops × GHz, with W the SIMD width of this build
// (16 with AVX-512) and GHz measured here (a dependent multiply–xor chain: 3 + 1 cycles per
// step on every x86-64 core since Sandy Bridge / Zen, timed in thread CPU time so that a busy
// machine does not lower it). Two FMA units per core is an
// assumption (true for Xeon Scalable Gold/Platinum and Zen 4/5); the measured FMA throughput
// of a register-only loop is printed beside it as a check.

import CBLAS
import Dispatch
import Formats
import Foundation
import Tensors

// MARK: options

var outPath: String?
var quick = false
var backends = Backend.allCases
var only: String?
var useMinimum = false
/// Extra GEMM shapes (M, N, K, transA, transB).
var extraShapes: [(Int, Int, Int, Bool, Bool)] = []
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--out":
        guard let p = args.popFirst() else { fatalError("flmm-bench: --out needs a path") }
        outPath = p
    case "--quick":
        quick = true
    case "--backend":
        guard let b = args.popFirst().flatMap(Backend.init(rawValue:)) else { fatalError("flmm-bench: --backend own|openblas") }
        backends = [b]
    case "--only":
        only = args.popFirst()
    case "--min":
        useMinimum = true
    case "--shape":
        let spec = (args.popFirst() ?? "").split(separator: ":")
        let parts = (spec.first ?? "").split(separator: "x").compactMap { Int($0) }
        let trans = spec.count == 2 ? String(spec[1]).lowercased() : "nn"
        guard parts.count == 3, spec.count <= 2, ["nn", "tn", "nt", "tt"].contains(trans) else {
            fatalError("flmm-bench: --shape MxNxK or MxNxK:TN (A transposed), :NT (B), :TT")
        }
        extraShapes.append((parts[0], parts[1], parts[2], trans.first == "t", trans.last == "t"))
    case "-h", "--help":
        print("""
        usage: flmm-bench [--out FILE.nc] [--quick] [--backend own|openblas] [--only gemm|conv|shapes|unet|sam] [--shape MxNxK[:TN|NT|TT]]
          --quick    small sizes (a smoke run)
          --backend  measure one backend only
          --only     gemm | conv | shapes | unet | sam: the square GEMMs, the convolutions, only --shape
                     GEMMs, only the U-Net training step (UNetBench.swift), or only the SAM
                     rows (SAMBench.swift)
          --min      report the fastest sample instead of the median (tuning on a busy machine)
          --shape MxNxK  also time C[M,N] = A[M,K]·B[K,N] (repeatable); MxNxK:TN with A stored
                 transposed ([K,M]), :NT with B transposed ([N,K]), :TT both
        """)
        exit(0)
    default:
        FileHandle.standardError.write("flmm-bench: unknown argument '\(a)' (try --help)\n".data(using: .utf8)!)
        exit(2)
    }
}

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

/// CPU seconds used by this thread (or the whole process): immune to time slicing on a busy machine.
func cpuTime(process: Bool = false) -> Double {
    var ts = timespec()
    clock_gettime(process ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

// MARK: machine

/// Dependent multiply then xor: 4 cycles per step (imul r64 latency 3, xor 1).
@inline(never) func mulXorChain(_ steps: Int, _ seed: Int) -> Int {
    var x = seed
    for _ in 0..<steps { x = (x &* seed) ^ 0x5bd1e995 }
    return x
}

/// The core clock in GHz: the fastest of several chains, timed in thread CPU time.
func measureClockGHz() -> Double {
    let steps = 50_000_000
    var best = Double.infinity
    var sink = 0
    for _ in 0..<7 {
        let t0 = cpuTime()
        sink &+= mulXorChain(steps, 0x1234567 | (sink & 1))
        best = min(best, cpuTime() - t0)
    }
    if sink == 42 { print("") }
    return 4 * Double(steps) / best / 1e9
}

/// Register-only FMA throughput of one core in GFLOP/s (12 independent accumulators), in thread CPU time.
@inline(never) func fmaThroughput<V: SIMD>(_: V.Type, iterations: Int) -> Double where V.Scalar == Float {
    var best = Double.infinity
    var keep: Float = 0
    for _ in 0..<5 {
        var a0 = V(repeating: 0.1), a1 = V(repeating: 0.2), a2 = V(repeating: 0.3), a3 = V(repeating: 0.4)
        var a4 = V(repeating: 0.5), a5 = V(repeating: 0.6), a6 = V(repeating: 0.7), a7 = V(repeating: 0.8)
        var a8 = V(repeating: 0.9), a9 = V(repeating: 1.0), a10 = V(repeating: 1.1), a11 = V(repeating: 1.2)
        let m = V(repeating: 0.999_999), b = V(repeating: 1e-7)
        let t0 = cpuTime()
        for _ in 0..<iterations {
            a0 = a0.addingProduct(m, b); a1 = a1.addingProduct(m, b); a2 = a2.addingProduct(m, b)
            a3 = a3.addingProduct(m, b); a4 = a4.addingProduct(m, b); a5 = a5.addingProduct(m, b)
            a6 = a6.addingProduct(m, b); a7 = a7.addingProduct(m, b); a8 = a8.addingProduct(m, b)
            a9 = a9.addingProduct(m, b); a10 = a10.addingProduct(m, b); a11 = a11.addingProduct(m, b)
        }
        best = min(best, cpuTime() - t0)
        keep += (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11).sum()
    }
    if keep == 42 { print("") }
    return Double(iterations) * 12 * Double(V.scalarCount) * 2 / best / 1e9
}

func cpuModel() -> String {
    guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown" }
    for line in text.split(separator: "\n") where line.hasPrefix("model name") {
        return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown"
    }
    return "unknown"
}

let cores = Parallel.defaultThreadCount()
let lanes = Kernels.gemmSIMDWidth
let fmaUnits = 2
let ghz = measureClockGHz()
let peakPerCore = Double(fmaUnits * lanes * 2) * ghz
let measuredFMA: Double = {
    switch lanes {
    case 16: return fmaThroughput(SIMD16<Float>.self, iterations: 20_000_000)
    case 8: return fmaThroughput(SIMD8<Float>.self, iterations: 20_000_000)
    default: return fmaThroughput(SIMD4<Float>.self, iterations: 20_000_000)
    }
}()
let coreType = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "unset"
let threadCounts = cores > 2 ? [1, 2, cores] : [1, 2]

print("""
CPU: \(cpuModel()), \(cores) cores, build SIMD width \(lanes) floats
clock (measured): \(String(format: "%.2f", ghz)) GHz
fp32 peak: \(cores) cores × \(fmaUnits) FMA units × \(lanes) lanes × 2 × \(String(format: "%.2f", ghz)) GHz = \
\(String(format: "%.0f", peakPerCore * Double(cores))) GFLOP/s (\(String(format: "%.0f", peakPerCore)) per core; \
assumes \(fmaUnits) FMA units per core)
measured register-only FMA throughput, 1 core: \(String(format: "%.0f", measuredFMA)) GFLOP/s \
(\(String(format: "%.0f", 100 * measuredFMA / peakPerCore))% of the assumed per-core peak)
OpenBLAS: core \(Backend.openblasCoreName), OPENBLAS_CORETYPE=\(coreType)
""")

// MARK: measurement

struct Measurement {
    var name: String
    var backend: Backend
    var threads: Int
    var ms: Double
    var gflops: Double
    var flops: Double
    var samples: Int
    /// Process CPU time / (wall time × threads) over the samples: below ~0.9 the machine was busy.
    var cpuShare: Double
    /// Flops per CPU second of one thread (= GFLOP/s ÷ (threads × cpuShare)): the rate while running.
    var gflopsPerCPUSecond: Double { gflops / (Double(threads) * cpuShare) }
}
var measurements: [Measurement] = []
var bitwiseNotes: [String] = []

/// Median seconds of `body` over several samples (each sample repeats `body` enough to last
/// about 20 ms; at most ~0.6 s of samples per measurement after one warm-up).
@MainActor func time(_ body: () -> Void) -> (seconds: Double, samples: Int, cpu: Double) {
    let t0 = now()
    body()
    let first = max(now() - t0, 1e-6)
    let inner = max(1, Int(0.02 / first))
    let samples = max(3, min(9, Int(0.6 / (first * Double(inner)))))
    var ts: [Double] = []
    let c0 = cpuTime(process: true), w0 = now()
    for _ in 0..<samples {
        let s = now()
        for _ in 0..<inner { body() }
        ts.append((now() - s) / Double(inner))
    }
    let cpu = (cpuTime(process: true) - c0) / (now() - w0)
    ts.sort()
    return (useMinimum ? ts[0] : ts[ts.count / 2], samples, cpu)
}

@MainActor func record(_ name: String, _ backend: Backend, _ threads: Int, flops: Double, _ body: () -> Void) {
    Backend.current = backend
    Parallel.threads = threads
    let (s, n, cpu) = time(body)
    measurements.append(Measurement(name: name, backend: backend, threads: threads, ms: s * 1e3,
                                    gflops: flops / s / 1e9, flops: flops, samples: n,
                                    cpuShare: cpu / Double(threads)))
}

func randn(_ count: Int, seed: UInt64) -> [Float] {
    var rng = PhiloxRNG(seed: seed)
    return (0..<count).map { _ in rng.nextNormal() }
}

/// "equal" or "differ in k of n elements".
func compare(_ a: [Float], _ b: [Float]) -> String {
    let diff = zip(a, b).reduce(0) { $0 + ($1.0.bitPattern == $1.1.bitPattern ? 0 : 1) }
    return diff == 0 ? "equal" : "differ in \(diff) of \(a.count) elements"
}

/// One benchmarked computation: its name, flop count, the timed body, and the outputs
/// compared bitwise across thread counts.
struct BenchCase {
    let name: String
    let flops: Double
    let run: () -> Void
    let outputs: () -> [Float]
}
var cases: [BenchCase] = []
/// Names whose outputs are checked bitwise (one per operand set).
var bitwiseCases: [Int] = []

// MARK: GEMM

let gemmSizes = only != nil && only != "gemm" ? [] : quick ? [64, 128] : [256, 512, 1024, 2048]
for (m, n, k, ta, tb) in gemmSizes.map({ ($0, $0, $0, false, false) }) + extraShapes {
    let a = randn(m * k, seed: 1), b = randn(k * n, seed: 2)
    let product = {
        var c = [Float](repeating: 0, count: m * n)
        Kernels.gemm(transA: ta, transB: tb, m: m, n: n, k: k, a: a, lda: ta ? m : k, b: b, ldb: tb ? k : n,
                     c: &c, ldc: n, accumulate: false)
        return c
    }
    let suffix = ta || tb ? "_" + (ta ? "t" : "n") + (tb ? "t" : "n") : ""
    let name = (m == n && n == k ? "gemm_\(n)" : "gemm_\(m)x\(n)x\(k)") + suffix
    bitwiseCases.append(cases.count)
    cases.append(BenchCase(name: name, flops: 2 * Double(m) * Double(n) * Double(k), run: { _ = product() },
                           outputs: product))
}

// MARK: 3×3 convolutions of the U-Net (stride 1, padding 1, batch 3)

let convShapes: [(cin: Int, cout: Int, hw: Int)] = only != nil && only != "conv" ? []
    : quick ? [(16, 8, 16)] : [(384, 64, 64), (64, 64, 64), (512, 256, 16)]
let batch = 3
for (cin, cout, hw) in convShapes {
    let xShape = [batch, cin, hw, hw], wShape = [cout, cin, 3, 3]
    let geometry = Conv2dGeometry(stride: (1, 1), padding: (1, 1))
    let x = randn(xShape.product, seed: 3), w = randn(wShape.product, seed: 4).map { $0 * 0.05 }
    let bias = randn(cout, seed: 5)
    let u = randn(batch * cout * hw * hw, seed: 6)
    let fwdFlops = 2 * Double(batch * cout * hw * hw) * Double(cin * 9)
    let base = "conv3x3_\(cin)_\(cout)_\(hw)x\(hw)"
    let forward = { Kernels.conv2d(x, xShape, weight: w, wShape, bias: bias, geometry) }
    let backward = {
        Kernels.conv2dBackward(u, x: x, xShape, weight: w, wShape, geometry, needX: true, needWeight: true, needBias: true)
    }
    cases.append(BenchCase(name: "\(base)_fwd", flops: fwdFlops, run: { _ = forward() }, outputs: forward))
    bitwiseCases.append(cases.count)
    cases.append(BenchCase(name: "\(base)_fwdbwd", flops: 3 * fwdFlops, run: { _ = forward(); _ = backward() },
                           outputs: { let g = backward(); return forward() + g.x! + g.weight! + g.bias! }))
}

// Each backend in turn (OpenBLAS last: its idle worker threads spin for a while after a call,
// which would slow whatever runs next), then that backend's bitwise checks.
for backend in backends {
    for c in cases {
        for t in threadCounts { record(c.name, backend, t, flops: c.flops, c.run) }
    }
    for i in bitwiseCases {
        Backend.current = backend
        Parallel.threads = 1
        let one = cases[i].outputs()
        Parallel.threads = 2
        let two = cases[i].outputs()
        let what = cases[i].name.hasSuffix("_fwdbwd") ? "\(cases[i].name) (output and gradients)" : cases[i].name
        bitwiseNotes.append("\(what) \(backend.rawValue): 1 vs 2 threads bitwise \(compare(one, two))")
    }
}
Backend.current = .own
Parallel.threads = cores
let caseOrder = Dictionary(cases.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
measurements.sort { (caseOrder[$0.name]!, $0.backend == .own ? 0 : 1, $0.threads)
    < (caseOrder[$1.name]!, $1.backend == .own ? 0 : 1, $1.threads) }

// MARK: report

func fraction(_ m: Measurement) -> Double { m.gflops / (peakPerCore * Double(m.threads)) }
func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }

print("\n\(pad("name", 32)) \(pad("backend", 9)) threads \(lpad("ms", 9)) \(lpad("GFLOP/s", 8))  peak(threads)  peak(machine)  cpu  GF/cpu-s")
for m in measurements {
    print("\(pad(m.name, 32)) \(pad(m.backend.rawValue, 9)) \(lpad("\(m.threads)", 7)) \(lpad(String(format: "%.3f", m.ms), 9)) "
          + "\(lpad(String(format: "%.1f", m.gflops), 8))  \(lpad(String(format: "%.0f%%", 100 * fraction(m)), 13))  "
          + lpad(String(format: "%.0f%%", 100 * m.gflops / (peakPerCore * Double(cores))), 13)
          + lpad(String(format: "%.0f%%", 100 * m.cpuShare), 5)
          + lpad(String(format: "%.1f", m.gflopsPerCPUSecond), 10))
}
print("""
(cpu: process CPU time / (wall time × threads); well below 100% means other processes took the cores.
 Our idle pool workers spin for up to 2 ms between loops, and that counts as CPU time too.
 GF/cpu-s: GFLOP per CPU second of one thread, the rate while actually running.)

""")
for note in bitwiseNotes { print("bitwise \(note)") }
print("")
for m in measurements {
    print("bench \(m.name) backend=\(m.backend.rawValue) threads=\(m.threads) ms=\(String(format: "%.3f", m.ms)) "
          + "gflops=\(String(format: "%.1f", m.gflops))")
}

// MARK: U-Net training step (UNetBench.swift; not with --quick, --backend openblas or another --only)

if !quick && backends.contains(.own) && (only == nil || only == "unet") {
    print("")
    try UNetBench.run()
}

// MARK: SAM decoder training step and ViT-B forward (SAMBench.swift; same conditions, --only sam)

if !quick && backends.contains(.own) && (only == nil || only == "sam") {
    print("")
    SAMBench.run()
}

// MARK: NetCDF

if let outPath {
    let url = URL(fileURLWithPath: outPath)
    do {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let nc = try NetCDFFile.create(url)
        _ = try nc.defineDimension("measurement", length: measurements.count)
        _ = try nc.defineDimension("check", length: bitwiseNotes.count)
        _ = try nc.defineVariable("name", type: .string, dimensions: ["measurement"])
        _ = try nc.defineVariable("backend", type: .string, dimensions: ["measurement"])
        _ = try nc.defineVariable("threads", type: .int, dimensions: ["measurement"])
        _ = try nc.defineVariable("ms", type: .double, dimensions: ["measurement"])
        _ = try nc.defineVariable("gflops", type: .double, dimensions: ["measurement"])
        _ = try nc.defineVariable("flops", type: .double, dimensions: ["measurement"])
        _ = try nc.defineVariable("peak_fraction", type: .double, dimensions: ["measurement"])
        _ = try nc.defineVariable("machine_peak_fraction", type: .double, dimensions: ["measurement"])
        _ = try nc.defineVariable("samples", type: .int, dimensions: ["measurement"])
        _ = try nc.defineVariable("cpu_share", type: .double, dimensions: ["measurement"])
        _ = try nc.defineVariable("gflops_per_cpu_second", type: .double, dimensions: ["measurement"])
        _ = try nc.defineVariable("bitwise_check", type: .string, dimensions: ["check"])
        try nc.setAttribute("units", "ms", variable: "ms")
        try nc.setAttribute("long_name", "median wall time of one call", variable: "ms")
        try nc.setAttribute("units", "GFLOP/s", variable: "gflops")
        try nc.setAttribute("long_name", "fraction of the fp32 peak of the cores used (threads)", variable: "peak_fraction")
        try nc.setAttribute("long_name", "fraction of the fp32 peak of all cores", variable: "machine_peak_fraction")
        try nc.setAttribute("title", "flmm-bench: GEMM and U-Net 3x3 convolutions, our kernels vs OpenBLAS")
        try nc.setAttribute("cpu", .text(cpuModel()))
        try nc.setAttribute("cores", .int(cores))
        try nc.setAttribute("simd_width_floats", .int(lanes))
        try nc.setAttribute("clock_ghz_measured", .doubles([ghz]))
        try nc.setAttribute("peak_gflops_per_core", .doubles([peakPerCore]))
        try nc.setAttribute("peak_gflops_machine", .doubles([peakPerCore * Double(cores)]))
        try nc.setAttribute("peak_formula", .text("cores x \(fmaUnits) FMA units x \(lanes) lanes x 2 flops x measured GHz (2 FMA units per core assumed)"))
        try nc.setAttribute("fma_gflops_measured_1core", .doubles([measuredFMA]))
        try nc.setAttribute("openblas_core", .text(Backend.openblasCoreName))
        try nc.setAttribute("openblas_coretype_env", .text(coreType))
        try nc.setAttribute("conv_batch", .int(batch))
        try nc.writeStrings("name", measurements.map(\.name))
        try nc.writeStrings("backend", measurements.map(\.backend.rawValue))
        try nc.write("threads", measurements.map { Int32($0.threads) })
        try nc.write("ms", measurements.map(\.ms))
        try nc.write("gflops", measurements.map(\.gflops))
        try nc.write("flops", measurements.map(\.flops))
        try nc.write("peak_fraction", measurements.map(fraction))
        try nc.write("machine_peak_fraction", measurements.map { $0.gflops / (peakPerCore * Double(cores)) })
        try nc.write("samples", measurements.map { Int32($0.samples) })
        try nc.write("cpu_share", measurements.map(\.cpuShare))
        try nc.write("gflops_per_cpu_second", measurements.map(\.gflopsPerCPUSecond))
        try nc.setAttribute("long_name", "process CPU time / (wall time x threads) during the samples", variable: "cpu_share")
        try nc.writeStrings("bitwise_check", bitwiseNotes)
        try nc.close()
        print("\nwrote \(url.path)")
    } catch {
        FileHandle.standardError.write("flmm-bench: \(error)\n".data(using: .utf8)!)
        exit(1)
    }
}
