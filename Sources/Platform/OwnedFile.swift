/// A `FileDescriptor` held by reference: for owners that keep descriptors in copyable values (a list of records,
/// a tuple), which a non-copyable value cannot be part of. The descriptor closes when the last reference goes.
public final class OwnedFile {
    public let descriptor: FileDescriptor

    public init(_ descriptor: consuming FileDescriptor) {
        self.descriptor = descriptor
    }

    /// The number, lent for a call (the object owns it).
    public var rawValue: Int32 { descriptor.rawValue }

    /// open(2) with O_CLOEXEC added.
    public static func open(_ path: String, _ flags: Int32) throws(Errno) -> OwnedFile {
        OwnedFile(try FileDescriptor.open(path, flags))
    }
}
