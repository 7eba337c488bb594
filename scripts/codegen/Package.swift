// swift-tools-version:6.1
// Builds the protoc plugins used by scripts/generate-code.sh. Pinned exactly so regenerated code
// is byte-for-byte reproducible (CI checks it).
import PackageDescription

let package = Package(
  name: "alignd-codegen",
  dependencies: [
    .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf", exact: "2.4.1"),
  ],
  targets: []
)
