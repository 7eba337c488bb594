import AlignAPI
import AlignServer
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import SwiftProtobuf
import Testing

/// End-to-end tests: each starts the real `alignd` binary on a loopback port and talks to it over
/// TCP with a gRPC client.
@Suite("alignd over gRPC", .serialized)
struct ServerEndToEndTests {
  @Test func healthAndReflectionListEveryService() async throws {
    let server = try await ServerProcess()
    try await server.waitUntilServing()
    try await server.withClient { client in
      let health = Grpc_Health_V1_Health.Client(wrapping: client)
      for service in ["", "alignd.v1.Inference", "alignd.v1.Admin"] {
        let status = try await health.check(.with { $0.service = service }).status
        #expect(status == .serving, "\(service)")
      }
      await #expect(throws: RPCError.self) {
        _ = try await health.check(.with { $0.service = "no.such.Service" })
      }

      let reflection = Grpc_Reflection_V1_ServerReflection.Client(wrapping: client)
      let responses = try await reflection.serverReflectionInfo(
        requestProducer: { writer in
          try await writer.write(.with { $0.listServices = "" })
          try await writer.write(.with { $0.fileContainingSymbol = "alignd.v1.Inference" })
          try await writer.write(.with { $0.fileContainingSymbol = "alignd.v1.No" })
        },
        onResponse: { response in
          var all: [Grpc_Reflection_V1_ServerReflectionResponse] = []
          for try await message in response.messages { all.append(message) }
          return all
        })
      try #require(responses.count == 3)
      let names = Set(responses[0].listServicesResponse.service.map(\.name))
      #expect(
        names == [
          "alignd.v1.Inference", "alignd.v1.Admin", "grpc.health.v1.Health",
          "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
        ])
      // The file declaring Inference comes first, followed by its dependency (common.proto).
      let files = try responses[1].fileDescriptorResponse.fileDescriptorProto.map {
        try Google_Protobuf_FileDescriptorProto(serializedBytes: $0)
      }
      #expect(files.map(\.name) == ["alignd/v1/inference.proto", "alignd/v1/common.proto"])
      #expect(files[0].service.first?.method.map(\.name).contains("GenerateStream") == true)
      #expect(responses[2].errorResponse.errorCode == Int32(RPCError.Code.notFound.rawValue))

      // v1alpha (Python grpcio-reflection's version) answers the same.
      let alpha = Grpc_Reflection_V1alpha_ServerReflection.Client(wrapping: client)
      let alphaNames = try await alpha.serverReflectionInfo(
        requestProducer: { writer in try await writer.write(.with { $0.listServices = "" }) },
        onResponse: { response in
          var names: [String] = []
          for try await message in response.messages {
            names += message.listServicesResponse.service.map(\.name)
          }
          return names
        })
      #expect(Set(alphaNames) == names)
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test func defaultsServeOnLoopback50051() async throws {
    // No address flags at all: the documented default, 127.0.0.1:50051 (h2c).
    let server = try await ServerProcess(defaultPort: true)
    #expect(server.port == 50051)
    try await server.waitUntilServing()
    #expect(server.log.contains("127.0.0.1:50051"))
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test func authMatrix() async throws {
    let folder = try TestPaths.temporaryFolder()
    let keysFile = folder.appendingPathComponent("keys.txt")
    try """
      \(APIKeyStore.line(for: "test-admin-key", role: .admin, name: "admin"))
      \(APIKeyStore.line(for: "test-infer-key", role: .infer, name: "app"))
      """.write(to: keysFile, atomically: true, encoding: .utf8)
    let server = try await ServerProcess(arguments: ["--keys-file", keysFile.path])
    try await server.waitUntilServing()

    func bearer(_ key: String?) -> Metadata {
      guard let key else { return [:] }
      return ["authorization": "Bearer \(key)"]
    }

    try await server.withClient { client in
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let health = Grpc_Health_V1_Health.Client(wrapping: client)

      // Admin RPC: no key, wrong key, infer key, admin key.
      #expect(await statusCode { _ = try await admin.getStatus(.init(), metadata: bearer(nil)) } == .unauthenticated)
      #expect(await statusCode { _ = try await admin.getStatus(.init(), metadata: bearer("wrong")) } == .unauthenticated)
      #expect(
        await statusCode { _ = try await admin.getStatus(.init(), metadata: ["authorization": "test-admin-key"]) }
          == .unauthenticated)
      #expect(
        await statusCode { _ = try await admin.getStatus(.init(), metadata: bearer("test-infer-key")) } == .permissionDenied)
      let status = try await admin.getStatus(.init(), metadata: bearer("test-admin-key"))
      #expect(status.state == .serving)
      #expect(status.roles.first?.activeVersion.hasPrefix("SmolLM2-135M-Instruct.Q4_1@") == true)

      // Every other admin RPC is behind the same check.
      #expect(await statusCode { _ = try await admin.listCheckpoints(.init(), metadata: bearer("test-infer-key")) } == .permissionDenied)
      #expect(
        await statusCode { _ = try await admin.rollback(.init(), metadata: bearer("test-infer-key")) } == .permissionDenied)

      // Inference RPC: no key and wrong key are refused; infer and admin keys pass authentication.
      #expect(await statusCode { _ = try await inference.tokenize(.init(), metadata: bearer(nil)) } == .unauthenticated)
      #expect(await statusCode { _ = try await inference.tokenize(.init(), metadata: bearer("nope")) } == .unauthenticated)
      for key in ["test-infer-key", "test-admin-key"] {
        let result = await statusCode { _ = try await inference.tokenize(.with { $0.text = "hi" }, metadata: bearer(key)) }
        #expect(result != .unauthenticated && result != .permissionDenied, "\(key): \(String(describing: result))")
      }

      // Health stays open for probes.
      let healthStatus = try await health.check(.init()).status
      #expect(healthStatus == .serving)
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test func oversizedMessageIsRefusedWithResourceExhausted() async throws {
    let server = try await ServerProcess(arguments: ["--max-request-bytes", "65536"])
    try await server.waitUntilServing()
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let big = String(repeating: "x", count: 100_000)
      let error = await #expect(throws: RPCError.self) {
        _ = try await inference.tokenize(.with { $0.text = big })
      }
      #expect(error?.code == .resourceExhausted)
      #expect(error?.message.contains("exceeds the limit of 65536 bytes") == true, "\(error?.message ?? "")")

      // Far beyond the limit the transport itself refuses; the client still gets an error, and the
      // server keeps serving.
      let huge = String(repeating: "y", count: 400_000)
      await #expect(throws: RPCError.self) {
        _ = try await inference.tokenize(.with { $0.text = huge })
      }
      let health = Grpc_Health_V1_Health.Client(wrapping: client)
      let status = try await health.check(.init()).status
      #expect(status == .serving)
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test func sigtermTurnsHealthNotServingAndExitsCleanly() async throws {
    let server = try await ServerProcess(arguments: ["--drain-timeout-seconds", "10"])
    try await server.waitUntilServing()
    let statuses = try await server.withClient { client in
      let health = Grpc_Health_V1_Health.Client(wrapping: client)
      return try await health.watch(.init()) { response in
        var seen: [Grpc_Health_V1_HealthCheckResponse.ServingStatus] = []
        for try await message in response.messages {
          seen.append(message.status)
          if message.status == .serving { server.signal(SIGTERM) }
        }
        return seen
      }
    }
    #expect(statuses == [.serving, .notServing])
    #expect(try await server.waitForExit() == 0)
    #expect(server.log.contains("draining"))
  }

  @Test func badConfigurationExitsNonZeroWithAClearMessage() throws {
    let badFlag = try runAlignd(["serve", "--port", "99999"])
    #expect(badFlag.status == 78)
    #expect(badFlag.stderr.contains("flag --port: port must be in 0...65535"), "\(badFlag.stderr)")

    let badEnv = try runAlignd(["serve"], environment: ["ALIGND_LOG_LEVEL": "shouty"])
    #expect(badEnv.status == 78)
    #expect(badEnv.stderr.contains("ALIGND_LOG_LEVEL"), "\(badEnv.stderr)")

    let missingFile = try runAlignd(["serve", "--config", "/nonexistent/alignd.json"])
    #expect(missingFile.status == 78)
    #expect(missingFile.stderr.contains("cannot read config file /nonexistent/alignd.json"))

    // Secure by default: a non-loopback bind without keys is refused.
    let open = try runAlignd(["serve", "--host", "0.0.0.0", "--port", "0"])
    #expect(open.status == 78)
    #expect(open.stderr.contains("refusing to bind 0.0.0.0 without a keys file"), "\(open.stderr)")
  }

  @Test func portInUseIsAClearError() async throws {
    let first = try await ServerProcess()
    let second = try runAlignd([
      "serve", "--port", "\(first.port)", "--models-dir", TestPaths.modelsDir.path,
    ])
    #expect(second.status != 0)
    #expect(second.stderr.contains("is the port already in use"), "\(second.stderr)")
    first.signal(SIGTERM)
    _ = try await first.waitForExit()
  }
}
