// swift-tools-version:6.1
// The inference engine and its tests built WITHOUT the AVX2 settings of the main package, to check
// the kernels nothing else builds: SSE2 (the x86-64 baseline) and portable Swift. A package of its
// own so the main build never sees it: the engine sources, its tests and their fixtures are the main
// package's, reached through symlinks (the tests find Tests/Fixtures and models/ from #filePath).
// scripts/test-kernel-fallbacks.sh picks the kernels with -Xswiftc defines and compares the
// kernel-digest output of every path with the AVX2 one.
import PackageDescription

let swiftSettings: [SwiftSetting] = [
  .swiftLanguageMode(.v6)
]

/// The engine is compiled with testing enabled so kernel-digest can call the row kernels directly
/// with `@testable import` (the test suites themselves use the public API only).
let engineSettings: [SwiftSetting] = swiftSettings + [.unsafeFlags(["-enable-testing"])]

let package = Package(
  name: "alignd-kernel-fallbacks",
  platforms: [.macOS(.v15)],
  targets: [
    .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
    .target(name: "AlignEngine", dependencies: ["CBLAS"], swiftSettings: engineSettings),
    .executableTarget(name: "kernel-digest", dependencies: ["AlignEngine"], swiftSettings: swiftSettings),
    .target(name: "AlignTestSupport", path: "Tests/TestSupport", swiftSettings: swiftSettings),
    .testTarget(name: "AlignEngineTests", dependencies: ["AlignEngine", "AlignTestSupport"], swiftSettings: swiftSettings),
  ]
)
