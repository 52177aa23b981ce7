// swift-tools-version:6.0
// F-LMM in Swift: deterministic tensors with autograd, the U-Net mask head, SAM, losses,
// and the experiments that rerun the paper's ablations. See README.md.
//
// Build flags that decide speed (the target CPU) are passed by the Makefile, never here:
// `make` detects AVX-512 / AVX2 and adds `-Xswiftc -target-cpu -Xswiftc <cpu>` to every build.
import PackageDescription

let package = Package(
    name: "FLMM",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "flmm", targets: ["flmm"]),
        .executable(name: "flmm-bench", targets: ["flmm-bench"]),
        .library(name: "Tensors", targets: ["Tensors"]),
        .library(name: "NN", targets: ["NN"]),
        .library(name: "Formats", targets: ["Formats"]),
        .library(name: "SegmentAnything", targets: ["SegmentAnything"]),
        .library(name: "FLMM", targets: ["FLMM"]),
        .library(name: "GroundingCache", targets: ["GroundingCache"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-numerics", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.0.0"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.19"),
    ],
    targets: [
        // C libraries, wrapped once.
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
        .systemLibrary(name: "CNetCDF", path: "Sources/CNetCDF"),

        // Tensor, deterministic kernels, RNG, reverse-mode autograd (one gradient table).
        .target(name: "Tensors", dependencies: [
            "CBLAS",
            .product(name: "RealModule", package: "swift-numerics"),
        ]),
        // Modules with PyTorch state-dict keys, losses, AdamW, LR schedules, initialisers.
        .target(name: "NN", dependencies: ["Tensors"]),
        // Segment Anything: image encoder, prompt encoder, two-way transformer, mask decoder.
        .target(name: "SegmentAnything", dependencies: ["NN"]),
        // F-LMM: attention maps, U-Net head, SAM refiner, losses, metrics.
        .target(name: "FLMM", dependencies: ["NN", "SegmentAnything"]),
        // GroundingCache: frozen-model features per sample in NetCDF-4 (SCHEMA.md).
        .target(name: "GroundingCache", dependencies: ["Tensors", "Formats", "FLMM"], exclude: ["SCHEMA.md"]),
        // ShapesWorld: the embedded world (scenes, referring expressions, TinyVLM).
        .target(name: "ShapesWorld", dependencies: ["FLMM", "NN", "GroundingCache", "SegmentAnything", "Formats"]),
        // safetensors, PyTorch .pth (zip + restricted unpickler), NetCDF.
        .target(name: "Formats", dependencies: [
            "Tensors", "CNetCDF",
            .product(name: "ZIPFoundation", package: "ZIPFoundation"),
        ]),
        // F-LMM's training and evaluation on cached features, the ablation grid, Results files.
        .target(name: "FLMMExperiments", dependencies: [
            "Tensors", "NN", "Formats", "SegmentAnything", "FLMM", "GroundingCache",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // The experiments' shared command-line options, cache provisioning and summaries.
        .target(name: "ExperimentKit", dependencies: [
            "FLMMExperiments", "GroundingCache", "ShapesWorld", "Formats", "SegmentAnything", "Tensors",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // One executable per experiment (Experiments/<name>/main.swift).
        .executableTarget(name: "ablate-merge", dependencies: ["ExperimentKit", "FLMMExperiments"], path: "Experiments/ablate-merge"),
        .executableTarget(name: "ablate-normalize", dependencies: ["ExperimentKit", "FLMMExperiments"], path: "Experiments/ablate-normalize"),
        .executableTarget(name: "ablate-upsample", dependencies: ["ExperimentKit", "FLMMExperiments"], path: "Experiments/ablate-upsample"),
        .executableTarget(name: "ablate-prompts", dependencies: ["ExperimentKit", "FLMMExperiments"], path: "Experiments/ablate-prompts"),
        .executableTarget(name: "ablate-all", dependencies: ["ExperimentKit", "FLMMExperiments"], path: "Experiments/ablate-all"),
        // Rebuilds golden cases from their config and compares with PyTorch's tensors.
        .target(name: "Verification", dependencies: ["Tensors", "NN", "Formats", "SegmentAnything", "FLMM"]),

        .executableTarget(name: "flmm", dependencies: [
            "Tensors", "NN", "Formats", "Verification", "SegmentAnything", "FLMM", "GroundingCache", "ShapesWorld", "FLMMExperiments",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .executableTarget(name: "flmm-bench", dependencies: [
            "Tensors", "NN", "Formats", "CBLAS", "FLMM", "SegmentAnything",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),

        .testTarget(name: "TensorsTests", dependencies: [
            "Tensors", "NN", "Formats", "Verification", "SegmentAnything", "FLMM", "ShapesWorld", "FLMMExperiments",
            "GroundingCache",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
    ]
)
