/// This build's version: `portcullis --version`, the API's `/health`, the CLI's User-Agent.
public enum PortcullisVersion {
    public static let string = "0.1.0"
}
