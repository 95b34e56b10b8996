import Foundation
import WaybackCore
import Testing
@testable import WaybackS3

/// The header-based examples of AWS's "Signature Calculations for the Authorization Header:
/// Transferring Payload in a Single Chunk" (Amazon S3 API reference).
@Suite struct SigV4Tests {
    let signer = SigV4Signer(credentials: S3Credentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE",
                                                        secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", source: "test"),
                             region: "us-east-1")
    let date = Date(timeIntervalSince1970: 1369353600)  // 2013-05-24T00:00:00Z

    func signature(_ auth: String) -> String { String(auth.split(separator: "=").last!) }

    @Test func getObjectWithRange() {
        var headers = [("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9")]
        let auth = signer.sign(method: "GET", path: "/test.txt", query: [], headers: &headers,
                               payloadHash: SigV4Signer.emptyPayloadHash, date: date)
        #expect(auth.contains("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"))
        #expect(signature(auth) == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    @Test func putObject() {
        let body = Array("Welcome to Amazon S3.".utf8)
        var headers = [("Host", "examplebucket.s3.amazonaws.com"), ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                       ("x-amz-storage-class", "REDUCED_REDUNDANCY")]
        let hash = WaybackCore.SHA256Hasher.hex(body)
        #expect(hash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        let auth = signer.sign(method: "PUT", path: "/" + S3URI.encode("test$file.text", keepSlash: true), query: [], headers: &headers,
                               payloadHash: hash, date: date)
        #expect(signature(auth) == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    }

    @Test func getBucketLifecycle() {
        var headers = [("Host", "examplebucket.s3.amazonaws.com")]
        let auth = signer.sign(method: "GET", path: "/", query: [("lifecycle", "")], headers: &headers,
                               payloadHash: SigV4Signer.emptyPayloadHash, date: date)
        #expect(signature(auth) == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
    }

    @Test func listObjects() {
        var headers = [("Host", "examplebucket.s3.amazonaws.com")]
        let auth = signer.sign(method: "GET", path: "/", query: [("max-keys", "2"), ("prefix", "J")], headers: &headers,
                               payloadHash: SigV4Signer.emptyPayloadHash, date: date)
        #expect(signature(auth) == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    @Test func uriEncoding() {
        #expect(S3URI.encode("a b+c=d/é~", keepSlash: true) == "a%20b%2Bc%3Dd/%C3%A9~")
        #expect(S3URI.encode("wal/", keepSlash: false) == "wal%2F")
    }

    @Test func addressing() {
        let creds = S3Credentials(accessKeyID: "A", secretAccessKey: "S", source: "test")
        let vhost = S3Settings(bucket: "b", region: "eu-central-1", prefix: "prod", credentials: creds)
        #expect(vhost.prefix == "prod/")
        let a = vhost.address(key: "c/x+y")
        #expect(a.host == "b.s3.eu-central-1.amazonaws.com" && a.path == "/prod/c/x%2By" && a.baseURL == "https://b.s3.eu-central-1.amazonaws.com")
        let path = S3Settings(endpoint: "http://127.0.0.1:9000/", bucket: "b", region: "us-east-1", pathStyle: true, credentials: creds)
        let p = path.address(key: "k")
        #expect(p.host == "127.0.0.1:9000" && p.path == "/b/k" && p.baseURL == "http://127.0.0.1:9000")
        #expect(path.address(key: nil).path == "/b")
    }

    @Test func sharedCredentialsFile() {
        let text = """
        [default]
        aws_access_key_id = AKIADEFAULT
        aws_secret_access_key = secret1

        [profile backup]
        aws_access_key_id=AKIABACKUP
        aws_secret_access_key=secret2
        aws_session_token = tok
        """
        let c = S3Credentials.parseSharedFile(text, profile: "backup", source: "f")
        #expect(c?.accessKeyID == "AKIABACKUP" && c?.secretAccessKey == "secret2" && c?.sessionToken == "tok")
        #expect(S3Credentials.parseSharedFile(text, profile: "default", source: "f")?.secretAccessKey == "secret1")
        #expect(S3Credentials.parseSharedFile(text, profile: "nope", source: "f") == nil)
        #expect(!String(describing: c!).contains("secret2"))
    }

    @Test func xmlValues() {
        let xml = "<ListBucketResult><Contents><Key>a&amp;b</Key><Size>3</Size></Contents><Contents><Key>c</Key><Size>0</Size></Contents><IsTruncated>false</IsTruncated></ListBucketResult>"
        let items = XMLText.elements("Contents", in: xml)
        #expect(items.count == 2)
        #expect(XMLText.value("Key", in: items[0]) == "a&b")
        #expect(XMLText.value("IsTruncated", in: xml) == "false")
    }
}
