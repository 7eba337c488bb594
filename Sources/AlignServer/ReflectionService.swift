import AlignAPI
import Foundation
import GRPCCore
import SwiftProtobuf

/// The file descriptors of every schema, indexed for reflection lookups.
struct DescriptorIndex: Sendable {
  /// Serialized `FileDescriptorProto` by file name.
  let files: [String: Data]
  /// Direct dependencies by file name.
  let dependencies: [String: [String]]
  /// The file declaring each fully qualified symbol (messages, enums, services, methods).
  let symbols: [String: String]
  /// Fully qualified names of every service, sorted.
  let services: [String]

  /// Builds the index from the base64 `FileDescriptorSet` generated into AlignAPI.
  init(base64: String) throws {
    guard let data = Data(base64Encoded: base64, options: .ignoreUnknownCharacters) else {
      throw RPCError(code: .internalError, message: "the embedded descriptor set is not valid base64")
    }
    let set = try Google_Protobuf_FileDescriptorSet(serializedBytes: data)
    var files: [String: Data] = [:]
    var dependencies: [String: [String]] = [:]
    var symbols: [String: String] = [:]
    var services: [String] = []
    for file in set.file {
      files[file.name] = try file.serializedBytes()
      dependencies[file.name] = file.dependency
      let prefix = file.package.isEmpty ? "" : file.package + "."
      func addMessage(_ message: Google_Protobuf_DescriptorProto, scope: String) {
        let name = scope + message.name
        symbols[name] = file.name
        for nested in message.nestedType { addMessage(nested, scope: name + ".") }
        for nested in message.enumType { symbols[name + "." + nested.name] = file.name }
      }
      for message in file.messageType { addMessage(message, scope: prefix) }
      for enumType in file.enumType { symbols[prefix + enumType.name] = file.name }
      for service in file.service {
        let name = prefix + service.name
        symbols[name] = file.name
        services.append(name)
        for method in service.method { symbols[name + "." + method.name] = file.name }
      }
    }
    self.files = files
    self.dependencies = dependencies
    self.symbols = symbols
    self.services = services.sorted()
  }

  /// A file and its transitive dependencies, the file itself first.
  func fileWithDependencies(_ name: String) -> [Data] {
    var seen: Set<String> = []
    var order: [String] = []
    func visit(_ file: String) {
      guard !seen.contains(file), files[file] != nil else { return }
      seen.insert(file)
      order.append(file)
      for dependency in dependencies[file] ?? [] { visit(dependency) }
    }
    visit(name)
    return order.compactMap { files[$0] }
  }

  /// Answers one reflection request (v1 messages; v1alpha is wire-identical).
  func answer(_ request: Grpc_Reflection_V1_ServerReflectionRequest) -> Grpc_Reflection_V1_ServerReflectionResponse {
    var response = Grpc_Reflection_V1_ServerReflectionResponse()
    response.validHost = request.host
    response.originalRequest = request
    func notFound(_ message: String) {
      response.errorResponse = .with {
        $0.errorCode = Int32(RPCError.Code.notFound.rawValue)
        $0.errorMessage = message
      }
    }
    switch request.messageRequest {
    case .listServices:
      response.listServicesResponse = .with { list in
        list.service = services.map { name in .with { $0.name = name } }
      }
    case .fileByFilename(let name):
      if files[name] != nil {
        response.fileDescriptorResponse = .with { $0.fileDescriptorProto = fileWithDependencies(name) }
      } else {
        notFound("unknown file '\(name)'")
      }
    case .fileContainingSymbol(let symbol):
      if let file = symbols[symbol] {
        response.fileDescriptorResponse = .with { $0.fileDescriptorProto = fileWithDependencies(file) }
      } else {
        notFound("unknown symbol '\(symbol)'")
      }
    case .fileContainingExtension(let request):
      notFound("no extension \(request.extensionNumber) of '\(request.containingType)' (alignd declares no extensions)")
    case .allExtensionNumbersOfType(let type):
      if symbols[type] != nil {
        response.allExtensionNumbersResponse = .with { $0.baseTypeName = type }
      } else {
        notFound("unknown type '\(type)'")
      }
    case .none:
      response.errorResponse = .with {
        $0.errorCode = Int32(RPCError.Code.invalidArgument.rawValue)
        $0.errorMessage = "empty reflection request"
      }
    }
    return response
  }
}

/// grpc.reflection.v1: lets grpcurl and other standard clients list services and fetch descriptors.
struct ReflectionService: Grpc_Reflection_V1_ServerReflection.SimpleServiceProtocol {
  let index: DescriptorIndex

  func serverReflectionInfo(
    request: RPCAsyncSequence<Grpc_Reflection_V1_ServerReflectionRequest, any Error>,
    response: RPCWriter<Grpc_Reflection_V1_ServerReflectionResponse>,
    context: ServerContext
  ) async throws {
    for try await message in request {
      try await response.write(index.answer(message))
    }
  }
}

/// grpc.reflection.v1alpha, still the only version Python's grpcio-reflection speaks. Its messages
/// are wire-identical to v1, so each one is re-read as v1 and answered by the same index.
struct ReflectionServiceV1Alpha: Grpc_Reflection_V1alpha_ServerReflection.SimpleServiceProtocol {
  let index: DescriptorIndex

  func serverReflectionInfo(
    request: RPCAsyncSequence<Grpc_Reflection_V1alpha_ServerReflectionRequest, any Error>,
    response: RPCWriter<Grpc_Reflection_V1alpha_ServerReflectionResponse>,
    context: ServerContext
  ) async throws {
    for try await message in request {
      let v1 = try Grpc_Reflection_V1_ServerReflectionRequest(serializedBytes: message.serializedBytes() as [UInt8])
      let answer: [UInt8] = try index.answer(v1).serializedBytes()
      try await response.write(Grpc_Reflection_V1alpha_ServerReflectionResponse(serializedBytes: answer))
    }
  }
}
