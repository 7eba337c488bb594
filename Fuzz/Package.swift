// swift-tools-version:6.1
// libFuzzer targets for alignd's inference-engine parsers (GGUF, safetensors + config.json, tokenizer,
// chat templates). A package of its own so the main build never sees it and it never pulls in gRPC:
// the engine sources are the main package's, reached through the symlinks Sources/AlignEngine and
// Sources/CBLAS. Build and run with scripts/fuzz.sh (it adds -sanitize=fuzzer,address); see README.md.
import PackageDescription

let swiftSettings: [SwiftSetting] = [
  .swiftLanguageMode(.v6)
]

/// The engine is compiled with testing enabled so the harnesses can reach internal entry points
/// (`HyperparameterReader`, `SafeTensorsFile.data(of:)`) with `@testable import`.
let engineSettings: [SwiftSetting] = swiftSettings + [.unsafeFlags(["-enable-testing"])]

/// Harnesses define `LLVMFuzzerTestOneInput` only; libFuzzer provides `main`, so no top-level code.
let harnessSettings: [SwiftSetting] = swiftSettings + [.unsafeFlags(["-parse-as-library"])]

let package = Package(
  name: "alignd-fuzz",
  platforms: [.macOS(.v15)],
  targets: [
    .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
    .target(name: "AlignEngine", dependencies: ["CBLAS"], swiftSettings: engineSettings),
    .target(name: "FuzzSupport", dependencies: ["AlignEngine"], swiftSettings: swiftSettings),
    .executableTarget(name: "fuzz-gguf", dependencies: ["AlignEngine", "FuzzSupport"], swiftSettings: harnessSettings),
    .executableTarget(name: "fuzz-safetensors", dependencies: ["AlignEngine", "FuzzSupport"], swiftSettings: harnessSettings),
    .executableTarget(name: "fuzz-tokenizer", dependencies: ["AlignEngine", "FuzzSupport"], swiftSettings: harnessSettings),
    .executableTarget(name: "fuzz-chat-template", dependencies: ["AlignEngine", "FuzzSupport"], swiftSettings: harnessSettings),
  ]
)
