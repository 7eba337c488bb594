import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOSSL

/// The TLS material of the listeners, read and checked once at startup so that a missing file,
/// a key that does not match its certificate or a non-PEM file is a clear startup error rather
/// than a failed handshake later.
///
/// One certificate serves every port (gRPC, admin, HTTP). With a client CA, the admin listener
/// asks admin clients for a certificate chaining to it (mutual TLS); the other ports never ask.
public struct ListenerSecurity: Sendable {
  /// The server's certificate chain, leaf first.
  let chain: [NIOSSLCertificate]
  let key: NIOSSLPrivateKey
  /// The key file as read (the gRPC transport takes the key as bytes).
  let keyPEM: [UInt8]
  /// Admin clients' certificates must chain to one of these.
  let clientCAs: [NIOSSLCertificate]?

  /// Reads the TLS files named by `configuration`; nil when the listeners are plaintext.
  public init?(configuration: ServerConfiguration) throws {
    guard configuration.tlsEnabled else { return nil }
    chain = try Self.certificates(configuration.tlsCertFile, key: "tls_cert_file")
    keyPEM = try Self.read(configuration.tlsKeyFile, key: "tls_key_file")
    do {
      key = try NIOSSLPrivateKey(bytes: keyPEM, format: .pem)
    } catch {
      throw ConfigurationError(
        "tls_key_file \(configuration.tlsKeyFile): not a PEM private key (encrypted keys are not supported)")
    }
    clientCAs =
      configuration.tlsClientCAFile.isEmpty
      ? nil : try Self.certificates(configuration.tlsClientCAFile, key: "tls_client_ca_file")
    // A key that does not belong to the leaf certificate would only fail at the first handshake.
    do {
      var check = TLSConfiguration.makeServerConfiguration(
        certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
      check.minimumTLSVersion = .tlsv12
      _ = try NIOSSLContext(configuration: check)
    } catch {
      throw ConfigurationError(
        "tls_key_file \(configuration.tlsKeyFile) does not match the certificate in \(configuration.tlsCertFile): \(error)")
    }
  }

  /// TLS for the gRPC port: server authentication only (ALPN h2).
  var grpc: HTTP2ServerTransport.Posix.TransportSecurity {
    .tls(certificateChain: certificateSources, privateKey: keySource)
  }

  /// TLS for the admin listener: with client CAs, a client certificate chaining to them is required.
  var admin: HTTP2ServerTransport.Posix.TransportSecurity {
    guard let clientCAs else { return grpc }
    return .mTLS(certificateChain: certificateSources, privateKey: keySource) { tls in
      tls.clientCertificateVerification = .noHostnameVerification
      tls.trustRoots = .certificates(clientCAs.compactMap { try? .bytes($0.toDERBytes(), format: .der) })
    }
  }

  /// swift-nio-ssl configuration for the HTTP gateway (server authentication only; the caller sets
  /// the ALPN protocols it serves).
  public var http: TLSConfiguration {
    var tls = TLSConfiguration.makeServerConfiguration(
      certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
    tls.minimumTLSVersion = .tlsv12
    return tls
  }

  private var certificateSources: [TLSConfig.CertificateSource] {
    chain.compactMap { try? .bytes($0.toDERBytes(), format: .der) }
  }

  private var keySource: TLSConfig.PrivateKeySource { .bytes(keyPEM, format: .pem) }

  static func read(_ path: String, key: String) throws -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw ConfigurationError("\(key) \(path): cannot read the file")
    }
    return Array(data)
  }

  static func certificates(_ path: String, key: String) throws -> [NIOSSLCertificate] {
    let bytes = try read(path, key: key)
    let certificates = try? NIOSSLCertificate.fromPEMBytes(bytes)
    guard let certificates, !certificates.isEmpty else {
      throw ConfigurationError("\(key) \(path): no PEM certificate in the file")
    }
    return certificates
  }
}
