//! The command line and the one validated `Config` built from it.
//!
//! Parse, don't validate: clap turns what the user typed into plain values (`ServeArgs`), then
//! `ServeArgs::into_config` checks them once and builds the typed configuration every other module reads.

pub mod units;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::admin::AdminConfig;
use crate::fallback::{Fallback, FallbackStatus};
use crate::fetch::{FetchConfig, HostPattern, HostRules, NetworkPolicy};
use crate::freshness::{Clock, FreshnessPolicy};
use crate::request::{Dialects, RouteContext, TransformOptions};
use crate::signing::{DialectKeys, ImgproxyKey, SigningKey, SigningPolicy, ThumborKey};
use crate::transform::Limits;
use units::{parse_duration, parse_size};

/// `mirage`: the top-level command line.
#[derive(Debug, Parser)]
#[command(
    name = "mirage",
    version,
    about = "An image proxy and cache: mirrors image URLs like a CORS proxy, from a memory and disk cache"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `mirage`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service: `GET /?{url}` mirrors an image, `GET /{options}/?{url}` transforms it.
    Serve(ServeArgs),
    /// Print the distinct upstream image URLs found in articles (markdown, HTML, front matter, plain lists).
    Urls(UrlsArgs),
    /// Fill the cache with every image (and variant) found in articles, through a server or directly on disk.
    Warm(WarmArgs),
    /// Print the signed path of a target URL or request path, for servers run with `--signing-key`.
    Sign(SignArgs),
    /// Inspect (`stats`) or check (`verify`) a disk cache directory, offline; safe while a server runs on it.
    Cache(CacheArgs),
    /// Remove images (each original and every variant of it) from a running server's cache (`--server`) or from
    /// a cache directory (`--cache-dir`).
    Purge(PurgeArgs),
    /// Point the images of articles at Mirage: proxied URLs and direct hotlinks become
    /// `{base}/?{url}`, and `<img>` gets srcset, lazy loading and its size; nothing else in a file changes.
    Rewrite(RewriteArgs),
}

/// The flags of `mirage cache`.
#[derive(Debug, Clone, Parser)]
#[command(name = "cache")]
pub struct CacheArgs {
    /// What to do with the directory.
    #[command(subcommand)]
    pub command: CacheCommand,
}

/// The subcommands of `mirage cache`.
#[derive(Debug, Clone, Subcommand)]
pub enum CacheCommand {
    /// Count entries, bytes (logical and as the disk budget counts them), originals and variants, content types,
    /// oldest and newest, expired and negative entries. Reads headers only; changes nothing.
    Stats(CacheStatsArgs),
    /// Check every entry's header and checksum, delete the corrupt ones and print a summary; exit 1 when any was
    /// corrupt.
    Verify(CacheVerifyArgs),
}

/// The cache directory a `mirage cache` command reads.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheDirArgs {
    /// Directory of the disk cache [default: the one `serve` uses: $XDG_CACHE_HOME/mirage, or ~/.cache/mirage].
    #[arg(long, env = "MIRAGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl CacheDirArgs {
    /// The directory given, else `serve`'s default.
    pub fn resolve(&self) -> Result<PathBuf, String> {
        self.cache_dir
            .clone()
            .or_else(default_cache_dir)
            .ok_or_else(|| "no cache directory: set --cache-dir, $XDG_CACHE_HOME or $HOME".to_owned())
    }
}

/// The flags of `mirage cache stats`.
#[derive(Debug, Clone, Parser)]
#[command(name = "stats")]
pub struct CacheStatsArgs {
    /// Which directory.
    #[command(flatten)]
    pub dir: CacheDirArgs,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The flags of `mirage cache verify`.
#[derive(Debug, Clone, Parser)]
#[command(name = "verify")]
pub struct CacheVerifyArgs {
    /// Which directory.
    #[command(flatten)]
    pub dir: CacheDirArgs,
}

/// The flags of `mirage purge`.
#[derive(Debug, Clone, Parser)]
#[command(name = "purge")]
pub struct PurgeArgs {
    /// Image URLs in any spelling the server accepts (raw, percent-encoded, `/{options}/?URL`, behind a Mirage host
    /// or the CORS proxy); `-` reads URLs from standard input and `@FILE` from a file, one per line (blank lines and
    /// `#` comments skipped).
    #[arg(required = true, value_name = "URL|-|@FILE")]
    pub urls: Vec<String>,

    /// Purge through a running server's admin listener (e.g. http://127.0.0.1:9180): POST {URL}/purge. Purges
    /// memory and disk; use it whenever a server runs on the cache.
    #[arg(long, value_name = "ADMIN_URL")]
    pub server: Option<url::Url>,

    /// The admin token of the server (`Authorization: Bearer`), with --server.
    #[arg(long, value_name = "TOKEN", env = "MIRAGE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Purge this disk cache directly (without --server) [default: $XDG_CACHE_HOME/mirage, or ~/.cache/mirage].
    /// Safe while a server runs on it (files are removed by key), but that server's memory keeps its copies.
    #[arg(long, value_name = "DIR", env = "MIRAGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Also purge the fleet's shared cache directly (without --server): delete each source's objects from the
    /// store and write the purge records every node applies within its --purge-poll. Same URL and environment as
    /// `serve --shared-cache`; a missing local --cache-dir is then not an error.
    #[arg(long, value_name = "URL", env = "MIRAGE_SHARED_CACHE")]
    pub shared_cache: Option<String>,
}

/// The flags of `mirage sign`.
#[derive(Debug, Clone, Parser)]
#[command(name = "sign")]
pub struct SignArgs {
    /// The hex key to sign with [default: the first key of MIRAGE_SIGNING_KEY].
    #[arg(long, value_name = "HEX", env = "MIRAGE_SIGNING_KEY", hide_env_values = true, value_parser = parse_first_key)]
    pub key: Option<SigningKey>,

    /// A target URL (`http://host/a.jpg`) or a request path (`/width=300/?http://host/a.jpg`).
    #[arg(value_name = "URL_OR_PATH")]
    pub input: String,
}

/// The first key of a comma-separated list (MIRAGE_SIGNING_KEY holds all keys of a rotation; new links use the
/// first).
fn parse_first_key(text: &str) -> Result<SigningKey, String> {
    text.split(',').next().unwrap_or_default().parse()
}

/// Where `urls` and `warm` look for image URLs.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtractArgs {
    /// Files, directories (recursed) or `-` for standard input.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,

    /// File extensions read when recursing directories (repeatable or comma-separated).
    #[arg(long = "ext", value_name = "EXT", value_delimiter = ',', default_values = ["md", "markdown", "html", "htm", "txt"])]
    pub extensions: Vec<String>,

    /// A proxy prefix to strip from image URLs, in addition to the built-in `https://cors.zfour.workers.dev/?`
    /// (repeatable).
    #[arg(long = "proxy-prefix", value_name = "PREFIX")]
    pub proxy_prefixes: Vec<String>,
}

/// The flags of `mirage urls`.
#[derive(Debug, Clone, Parser)]
#[command(name = "urls")]
pub struct UrlsArgs {
    /// Inputs and prefixes.
    #[command(flatten)]
    pub extract: ExtractArgs,

    /// Print JSON lines (file, line, url, proxied) instead of bare URLs.
    #[arg(long)]
    pub json: bool,
}

/// The flags of `mirage warm`.
#[derive(Debug, Clone, Parser)]
#[command(name = "warm")]
pub struct WarmArgs {
    /// Inputs and prefixes.
    #[command(flatten)]
    pub extract: ExtractArgs,

    /// Warm a running server over HTTP (e.g. http://127.0.0.1:8080) instead of a disk cache directly. Without
    /// `--server`, the disk cache at `--cache-dir` (default: the one `serve` uses) is filled directly.
    #[arg(long, value_name = "URL")]
    pub server: Option<url::Url>,

    /// A variant to warm for every image, in the transform route's option syntax, e.g. `width=300` (repeatable;
    /// none means the original only).
    #[arg(long = "variant", value_name = "OPTIONS", value_parser = parse_variant)]
    pub variants: Vec<TransformOptions>,

    /// Entries warmed at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,

    /// Upstream requests in flight at once per upstream host (politeness).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub per_host: u32,

    /// Retries, with backoff, after a 5xx or a timeout.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,

    /// Print nothing but the final report.
    #[arg(long)]
    pub quiet: bool,

    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Cache, fetch and transform settings for warming the disk cache directly (as `serve` takes them).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// The flags of `mirage rewrite`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "rewrite",
    group = clap::ArgGroup::new("mode").required(true).multiple(true).args(["in_place", "out", "dry_run"]),
    mut_arg("inputs", |inputs| inputs.help("Files and directories (recursed)"))
)]
pub struct RewriteArgs {
    /// Inputs and prefixes (standard input is not an article that can be rewritten).
    #[command(flatten)]
    pub extract: ExtractArgs,

    /// Where Mirage answers, e.g. https://img.example.com: rewritten URLs are `{base}/?{url}` and
    /// `{base}/width=N,format=auto/?{url}`, and URLs already starting with `{base}/` are left alone.
    #[arg(long, value_name = "URL", value_parser = crate::rewrite::Base::parse)]
    pub base: crate::rewrite::Base,

    /// The widths of the `srcset` given to each `<img>` (comma-separated); `src` takes the largest.
    #[arg(long, value_name = "N,N,...", value_delimiter = ',', default_values_t = [320, 640, 1280],
          value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::request::MAX_DIMENSION)))]
    pub widths: Vec<u32>,

    /// Rewrite the files where they are (each through a temporary file and a rename).
    #[arg(long, conflicts_with = "out")]
    pub in_place: bool,

    /// Write every file read, rewritten or not, under this directory (a directory input's files keep their
    /// paths below it; a file input keeps its name).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Print a unified diff per file and the summary; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Leave direct hotlinks (absolute http(s) images on any host but the base's) where they are; by default they
    /// are pointed at Mirage like proxied ones.
    #[arg(long)]
    pub keep_hotlinks: bool,

    /// The disk cache `mirage warm` filled: `<img>` gets `width` and `height` from the originals found there
    /// [default: the one `serve` uses, when it exists].
    #[command(flatten)]
    pub cache: CacheDirArgs,
}

fn parse_variant(text: &str) -> Result<TransformOptions, String> {
    TransformOptions::parse(text).map_err(|error| error.to_string())
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The flags of `mirage serve`, as typed. Every flag can also be set by a `MIRAGE_<NAME>` environment variable.
#[derive(Debug, Clone, Parser)]
#[command(name = "serve")]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "MIRAGE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Client connections served at once; further connections wait in the listen backlog.
    #[arg(long, env = "MIRAGE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Time a client has to send its request headers (slow clients are disconnected).
    #[arg(long, env = "MIRAGE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Largest request head (request line plus headers) read from a client; a bigger one gets 431 and the
    /// connection is closed. At least 8KiB.
    #[arg(long, env = "MIRAGE_MAX_REQUEST_BYTES", default_value = "16KiB", value_parser = parse_size)]
    pub max_request_bytes: u64,

    /// Longest request URI (path and query, i.e. options plus target URL); a longer one gets 414.
    #[arg(long, env = "MIRAGE_MAX_URI_BYTES", default_value = "8KiB", value_parser = parse_size)]
    pub max_uri_bytes: u64,

    /// How long a response may make no progress (the client reads nothing) before it is dropped and its
    /// connection closed: a client that stops reading must not hold a connection slot and its body forever.
    #[arg(long, env = "MIRAGE_SEND_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub send_timeout: Duration,

    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish before the process exits.
    #[arg(long, env = "MIRAGE_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// A hex key (at least 32 hex digits) that verifies signed URLs; repeat it (or comma-separate in the
    /// environment) to rotate keys: any listed key verifies, and a `sig` that none verifies gets 403.
    #[arg(
        long = "signing-key",
        value_name = "HEX",
        env = "MIRAGE_SIGNING_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub signing_keys: Vec<SigningKey>,

    /// Refuse (403) requests without a valid `sig`; needs at least one --signing-key.
    #[arg(long, env = "MIRAGE_REQUIRE_SIGNATURE")]
    pub require_signature: bool,

    /// Address and port of the admin listener (`/metrics`, `/purge`, `/healthz`, `/readyz`), e.g.
    /// 127.0.0.1:9180 [default: off]. A non-loopback address needs --admin-token.
    #[arg(long, value_name = "ADDR", env = "MIRAGE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Bearer token the admin listener requires for `/purge`, and for `/metrics` unless --metrics-public.
    #[arg(long, value_name = "TOKEN", env = "MIRAGE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Serve `/metrics` on the admin listener without the token (`/purge` still needs it).
    #[arg(long, env = "MIRAGE_METRICS_PUBLIC")]
    pub metrics_public: bool,
    /// Response header naming each image's source for CDN purge by tag: `Cache-Tag` (Cloudflare), `Surrogate-Key`
    /// (Fastly), another name, or `off`. Its value is `mirage-` and 16 hex digits of the source's cache key, the
    /// same for the original and every variant of it.
    #[arg(long, value_name = "NAME", env = "MIRAGE_CACHE_TAG_HEADER", default_value = "Cache-Tag")]
    pub cache_tag_header: String,

    /// Log format: one line of text or one JSON object per event. Filter with RUST_LOG (e.g. RUST_LOG=mirage=debug).
    #[arg(long, env = "MIRAGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// An image (JPEG, PNG, GIF or WebP) answered instead of the error page when upstream or the source image is
    /// at fault (404/410, refusals, too large, not an image, undecodable, 502, 504), transformed as requested.
    /// Read and decoded at start: a bad file stops start-up.
    #[arg(long, value_name = "PATH", env = "MIRAGE_FALLBACK_IMAGE")]
    pub fallback_image: Option<PathBuf>,

    /// Status of fallback answers: `error` (the status the error would have had, e.g. 404 or 502) or a fixed
    /// status with a body (2xx except 204/205, 4xx, 5xx), e.g. 200.
    #[arg(long, value_name = "STATUS", env = "MIRAGE_FALLBACK_STATUS", default_value = "error",
          value_parser = FallbackStatus::parse)]
    pub fallback_status: FallbackStatus,

    /// How long clients and CDNs may keep a fallback answer (`Cache-Control: public, max-age=`).
    #[arg(long, env = "MIRAGE_FALLBACK_TTL", default_value = "60s", value_parser = parse_duration)]
    pub fallback_ttl: Duration,

    /// URL dialects read besides Mirage's own, as a comma-separated list of native, weserv (`/?url=`), cloudflare
    /// (`/cdn-cgi/image/`), imgproxy and thumbor. A dialect left out is not read: its paths are 404.
    #[arg(
        long,
        value_name = "LIST",
        env = "MIRAGE_DIALECTS",
        default_value = "native,weserv,cloudflare,imgproxy,thumbor"
    )]
    pub dialects: Dialects,

    /// The site relative Cloudflare sources are resolved against (`/cdn-cgi/image/w=300/uploads/a.jpg` fetches
    /// `{origin}/uploads/a.jpg`); without it a relative source is 400.
    #[arg(long, value_name = "URL", env = "MIRAGE_ORIGIN")]
    pub origin: Option<url::Url>,

    /// imgproxy's key (hex, as IMGPROXY_KEY): imgproxy URLs must then carry its signature (`insecure` is 403).
    /// Needs --imgproxy-salt.
    #[arg(long, value_name = "HEX", env = "MIRAGE_IMGPROXY_KEY", hide_env_values = true)]
    pub imgproxy_key: Option<String>,

    /// imgproxy's salt (hex, as IMGPROXY_SALT), with --imgproxy-key.
    #[arg(long, value_name = "HEX", env = "MIRAGE_IMGPROXY_SALT", hide_env_values = true)]
    pub imgproxy_salt: Option<String>,

    /// thumbor's SECURITY_KEY: thumbor URLs must then carry its signature (`unsafe` is 403).
    #[arg(long, value_name = "KEY", env = "MIRAGE_THUMBOR_KEY", hide_env_values = true)]
    pub thumbor_key: Option<ThumborKey>,

    /// Cache, fetch and transform settings (shared with `mirage warm`).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// The URL dialects a server reads and the keys of those that sign (`serve` only; native alone otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialectConfig {
    /// The dialects read and `--origin`.
    pub context: RouteContext,
    /// imgproxy's and thumbor's keys.
    pub keys: DialectKeys,
}

impl Default for DialectConfig {
    fn default() -> DialectConfig {
        DialectConfig { context: RouteContext::NATIVE, keys: DialectKeys::default() }
    }
}

impl ServeArgs {
    /// `--dialects`, `--origin` and the dialects' keys, checked together.
    fn dialect_config(&self) -> Result<DialectConfig, String> {
        if let Some(origin) = &self.origin
            && !matches!(origin.scheme(), "http" | "https")
        {
            return Err(format!("--origin {origin}: only http and https"));
        }
        let imgproxy = match (&self.imgproxy_key, &self.imgproxy_salt) {
            (Some(key), Some(salt)) => Some(ImgproxyKey::from_hex(key, salt)?),
            (None, None) => None,
            _ => return Err("--imgproxy-key and --imgproxy-salt go together".to_owned()),
        };
        let keys = DialectKeys { imgproxy, thumbor: self.thumbor_key.clone() };
        Ok(DialectConfig { context: RouteContext { dialects: self.dialects, origin: self.origin.clone() }, keys })
    }
}

/// The flags that shape the image pipeline: cache, upstream fetching, freshness and transforms. `serve` and
/// `warm` share them, so a cache warmed on a build machine is the cache the server reads.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    /// Directory of the disk cache [default: $XDG_CACHE_HOME/mirage, or ~/.cache/mirage].
    #[arg(long, env = "MIRAGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Keep the cache in memory only (no disk tier).
    #[arg(long, env = "MIRAGE_NO_DISK_CACHE")]
    pub no_disk_cache: bool,

    /// Byte budget of the in-memory cache tier, e.g. 256MiB.
    #[arg(long, env = "MIRAGE_MEMORY_CACHE_SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub memory_cache_size: u64,

    /// Byte budget of the disk cache tier, as the file system counts it (blocks and directories), e.g. 4GiB.
    /// `serve` records it in the cache directory; without the flag the recorded budget is used, and `warm`
    /// refuses one that differs from it [default: the recorded budget, else 4GiB].
    #[arg(long, env = "MIRAGE_DISK_CACHE_SIZE", value_parser = parse_size)]
    pub disk_cache_size: Option<u64>,

    /// Longest a disk cache read or write may take: past it a read is a miss and a write is dropped; after
    /// repeated timeouts the disk tier is bypassed until a probe succeeds.
    #[arg(long, env = "MIRAGE_DISK_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub disk_timeout: Duration,

    /// A cache shared by a fleet of nodes, on object storage: s3://BUCKET/PREFIX (also gs://, az://, and
    /// file:///PATH for a shared file system). Looked up after memory and disk, before upstream; originals and
    /// variants are both shared, one upstream fetch per image fleet-wide. S3 settings come from the environment:
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL (or
    /// AWS_ENDPOINT) for an S3-compatible server, AWS_ALLOW_HTTP=true for a plain-HTTP endpoint (GCS reads
    /// GOOGLE_*, Azure AZURE_*).
    #[arg(long, value_name = "URL", env = "MIRAGE_SHARED_CACHE")]
    pub shared_cache: Option<String>,

    /// Longest a shared cache lookup or lease may take (writes, purges and listings get ten times it). A store
    /// that fails or overruns it is skipped for --shared-probe-interval.
    #[arg(long, env = "MIRAGE_SHARED_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub shared_timeout: Duration,

    /// How long a failing shared cache is skipped before one request probes it again.
    #[arg(long, env = "MIRAGE_SHARED_PROBE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub shared_probe_interval: Duration,

    /// How often the shared cache's purge records are read, so a purge made through any node reaches this one.
    #[arg(long, env = "MIRAGE_PURGE_POLL", default_value = "10s", value_parser = parse_duration)]
    pub purge_poll: Duration,

    /// Timeout for connecting to an upstream host.
    #[arg(long, env = "MIRAGE_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Timeout for a whole upstream fetch: redirects, headers and body.
    #[arg(long, env = "MIRAGE_FETCH_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub fetch_timeout: Duration,

    /// Largest source image accepted; a download is aborted as soon as it passes this size (413).
    #[arg(long, env = "MIRAGE_MAX_SOURCE_BYTES", default_value = "25MiB", value_parser = parse_size)]
    pub max_source_bytes: u64,

    /// Redirect hops followed per upstream fetch.
    #[arg(long, env = "MIRAGE_MAX_REDIRECTS", default_value_t = 5)]
    pub max_redirects: usize,

    /// User-Agent sent upstream.
    #[arg(long, env = "MIRAGE_USER_AGENT", default_value = concat!("Mirage/", env!("CARGO_PKG_VERSION"), " (image proxy)"))]
    pub user_agent: String,

    /// Shortest time an image is kept fresh, whatever upstream says.
    #[arg(long, env = "MIRAGE_MIN_TTL", default_value = "1h", value_parser = parse_duration)]
    pub min_ttl: Duration,

    /// Longest time an image is kept fresh, whatever upstream says.
    #[arg(long, env = "MIRAGE_MAX_TTL", default_value = "30d", value_parser = parse_duration)]
    pub max_ttl: Duration,

    /// Freshness lifetime when upstream sends no Cache-Control max-age nor Expires.
    #[arg(long, env = "MIRAGE_DEFAULT_TTL", default_value = "7d", value_parser = parse_duration)]
    pub default_ttl: Duration,

    /// How long past expiry a stale entry may still be served when upstream fails (stale-if-error).
    #[arg(long, env = "MIRAGE_STALE_IF_ERROR", default_value = "7d", value_parser = parse_duration)]
    pub stale_if_error: Duration,

    /// How long an upstream refusal is remembered (negative caching): a 404/410, another 4xx such as 401/403/451,
    /// a body that is not an image or is too large, and a source a transform cannot decode.
    #[arg(long, env = "MIRAGE_NEGATIVE_TTL", default_value = "60s", value_parser = parse_duration)]
    pub negative_ttl: Duration,

    /// While upstream fails for a key that answers stale, how often one background request retries it.
    #[arg(long, env = "MIRAGE_RETRY_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub retry_interval: Duration,

    /// Allow fetching from loopback, private, link-local and other non-public addresses (off: such targets get 403).
    #[arg(long, env = "MIRAGE_ALLOW_PRIVATE_NETWORKS")]
    pub allow_private_networks: bool,

    /// Allow fetching from this address range although it is not public, e.g. 10.1.0.0/16 (repeatable).
    #[arg(long = "allow-net", value_name = "CIDR", env = "MIRAGE_ALLOW_NET", value_delimiter = ',')]
    pub allow_net: Vec<ipnet::IpNet>,

    /// Fetch only from hosts matching a pattern: a name (`static.1sapp.com`), `*.1sapp.com` for its subdomains
    /// at any depth (not `1sapp.com` itself), or an IP literal. Case-insensitive, IDNA-normalised, trailing dot
    /// ignored. Repeatable; applies to every redirect hop; others get 403.
    #[arg(long = "allow-host", value_name = "PATTERN", env = "MIRAGE_ALLOW_HOST", value_delimiter = ',')]
    pub allow_host: Vec<HostPattern>,

    /// Never fetch from hosts matching a pattern (same syntax as --allow-host; wins over it). Repeatable.
    #[arg(long = "deny-host", value_name = "PATTERN", env = "MIRAGE_DENY_HOST", value_delimiter = ',')]
    pub deny_host: Vec<HostPattern>,

    /// Fetch only from these ports (repeatable; a URL without a port counts as 80 for http, 443 for https)
    /// [default: any port].
    #[arg(long = "allow-port", value_name = "PORT", env = "MIRAGE_ALLOW_PORT", value_delimiter = ',',
          value_parser = clap::value_parser!(u16).range(1..))]
    pub allow_port: Vec<u16>,

    /// Largest source image, in pixels (width x height, e.g. 50M), that will be decoded for a transform; larger
    /// sources get 413 before a single pixel is decoded.
    #[arg(long, env = "MIRAGE_MAX_SOURCE_PIXELS", default_value = "50M", value_parser = parse_size)]
    pub max_source_pixels: u64,

    /// Largest output image, in pixels (width x height); a request for more gets 413 before decoding.
    #[arg(long, env = "MIRAGE_MAX_OUTPUT_PIXELS", default_value = "64MiB", value_parser = parse_size)]
    pub max_output_pixels: u64,

    /// Largest AVIF output, in pixels (width x height): an explicit format=avif for more gets 400, format=auto
    /// gives WebP instead. AVIF encodes cost many times what the other formats do.
    #[arg(long, env = "MIRAGE_MAX_AVIF_PIXELS", default_value = "4M", value_parser = parse_size)]
    pub max_avif_pixels: u64,

    /// Most frames an animated GIF may have to be transformed as an animation; more gets 413.
    #[arg(long, env = "MIRAGE_MAX_FRAMES", default_value_t = 1000)]
    pub max_frames: u32,

    /// Images decoded, resized and encoded at once [default: the number of CPU cores].
    #[arg(long, env = "MIRAGE_TRANSFORM_WORKERS")]
    pub transform_workers: Option<usize>,

    /// Transforms allowed to wait for a worker; past this, requests get 503 with Retry-After.
    #[arg(long, env = "MIRAGE_TRANSFORM_QUEUE", default_value_t = 64)]
    pub transform_queue: usize,

    /// Upstream fetches in flight at once; requests that would start more get 503 with Retry-After.
    #[arg(long, env = "MIRAGE_MAX_INFLIGHT_FETCHES", default_value_t = 256)]
    pub max_inflight_fetches: usize,
}

/// The disk budget when neither a flag nor the cache directory gives one.
pub const DEFAULT_DISK_CACHE_SIZE: u64 = 4 << 30;

/// Where and how much to cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Memory tier byte budget.
    pub memory_bytes: u64,
    /// Disk tier directory and byte budget; `None` runs memory-only.
    pub disk: Option<(PathBuf, u64)>,
    /// Whether this process records its budget in the cache directory (`serve` does; `warm` uses it).
    pub record_budget: bool,
    /// Bound on each disk operation.
    pub disk_timeout: Duration,
    /// The fleet's shared tier (`--shared-cache`), if any.
    pub shared: Option<mirage_cache::shared::SharedOptions>,
}

impl CacheConfig {
    /// What the cache crate needs to open the disk tier, if there is one.
    pub fn disk_options(&self) -> Option<mirage_cache::DiskOptions> {
        self.disk.as_ref().map(|(root, capacity)| mirage_cache::DiskOptions {
            root: root.clone(),
            capacity: *capacity,
            record_budget: self.record_budget,
            timeout: self.disk_timeout,
        })
    }
}

/// Who opens a cache directory: the server owns its budget (records it), other commands are guests (use it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheRole {
    /// `serve`.
    Owner,
    /// `warm`.
    Guest,
}

/// The disk budget for `dir`: the flag, else the one recorded there, else the default. A budget that differs
/// from the recorded one is refused from a guest, and from a second server while the one that recorded it is
/// still running: two budgets on one directory make each process evict the other's entries down to its own. A
/// server restarted with a new size (nobody else owns the directory) replaces the record.
fn resolve_disk_budget(dir: &std::path::Path, flag: Option<u64>, role: CacheRole) -> Result<u64, String> {
    let recorded = mirage_cache::budget::recorded(dir);
    let refused = |given: u64, recorded: u64| match role {
        CacheRole::Guest => given != recorded,
        CacheRole::Owner => given != recorded && mirage_cache::budget::has_live_owner(dir),
    };
    match (flag, recorded) {
        (Some(given), Some(recorded)) if refused(given, recorded) => Err(format!(
            "--disk-cache-size {} differs from the budget {} recorded in {}{}; leave the flag out to use the \
             recorded budget (to change it, restart `serve` with the new size)",
            units::format_size(given),
            units::format_size(recorded),
            dir.join(mirage_cache::budget::BUDGET_FILE).display(),
            if role == CacheRole::Owner { " by the `mirage serve` running on that directory" } else { "" },
        )),
        (Some(given), _) => Ok(given),
        (None, Some(recorded)) => Ok(recorded),
        (None, None) => Ok(DEFAULT_DISK_CACHE_SIZE),
    }
}

/// Image transformation: limits and the bounded worker pool.
#[derive(Debug, Clone)]
pub struct TransformConfig {
    /// Pixel, output and frame limits.
    pub limits: Limits,
    /// Transforms running at once.
    pub workers: usize,
    /// Transforms waiting for a worker at most.
    pub queue: usize,
}

/// The validated configuration of the image pipeline (what `serve` and `warm` share).
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Cache tiers.
    pub cache: CacheConfig,
    /// Upstream fetching.
    pub fetch: FetchConfig,
    /// Freshness and stale serving.
    pub freshness: FreshnessPolicy,
    /// Image transformation.
    pub transform: TransformConfig,
    /// Upstream fetches in flight at once.
    pub max_inflight_fetches: usize,
    /// How often a failing key that answers stale is retried upstream, in the background.
    pub retry_interval: Duration,
    /// Signed URLs: which keys verify and whether a signature is required (`serve` only; off otherwise).
    pub signing: SigningPolicy,
    /// The URL dialects read and their keys (`serve` only; native alone otherwise).
    pub dialects: DialectConfig,
    /// The time freshness is judged by: the system clock, except in tests that move time by hand.
    pub clock: Clock,
    /// The placeholder answered for upstream's and the source's failures (`serve` only; off otherwise).
    pub fallback: Option<Fallback>,
    /// The header that names an image's source for CDN purge by tag (`--cache-tag-header`); `None`: not sent.
    pub cache_tag_header: Option<http::HeaderName>,
}

/// `--cache-tag-header`: `off` (any case) sends none; anything else must be a header name that is not one Mirage
/// sets itself for another purpose.
fn parse_cache_tag_header(text: &str) -> Result<Option<http::HeaderName>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let name = http::HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| format!("--cache-tag-header {text:?} is not a header name (or `off`)"))?;
    let reserved = [
        http::header::CACHE_CONTROL,
        http::header::CONTENT_TYPE,
        http::header::CONTENT_LENGTH,
        http::header::ETAG,
        http::header::LAST_MODIFIED,
        http::header::AGE,
        http::header::VARY,
        http::header::CONTENT_SECURITY_POLICY,
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
        http::HeaderName::from_static("x-cache"),
    ];
    if reserved.contains(&name) {
        return Err(format!("--cache-tag-header {text}: Mirage sets that header itself"));
    }
    Ok(Some(name))
}

/// The validated configuration of the service.
#[derive(Debug, Clone)]
pub struct Config {
    /// The image pipeline.
    pub pipeline: PipelineConfig,
    /// Client connections at once.
    pub max_connections: usize,
    /// Time limit for reading a request's headers (also bounds idle keep-alive and silent connections).
    pub header_read_timeout: Duration,
    /// Largest request head in bytes (hyper's read buffer): over it, 431.
    pub max_request_bytes: usize,
    /// Longest request URI in bytes: over it, 414.
    pub max_uri_bytes: usize,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    /// Longest time a response may go without the client taking a byte; past it, the connection is closed.
    pub send_timeout: Duration,
    /// The admin listener, when `--admin-listen` is given.
    pub admin: Option<AdminConfig>,
}

impl ServeArgs {
    /// Checks the flags together and builds the `Config`.
    pub fn into_config(self) -> Result<Config, String> {
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        // hyper refuses (panics on) read buffers under 8 KiB.
        const MIN_REQUEST_BYTES: u64 = 8 * 1024;
        if self.max_request_bytes < MIN_REQUEST_BYTES {
            return Err("--max-request-bytes must be at least 8KiB".into());
        }
        let max_request_bytes = usize::try_from(self.max_request_bytes.min(u64::from(u32::MAX))).unwrap_or(usize::MAX);
        if self.max_uri_bytes == 0 {
            return Err("--max-uri-bytes must be at least 1".into());
        }
        if self.send_timeout.is_zero() {
            return Err("--send-timeout must be longer than zero".into());
        }
        if self.require_signature && self.signing_keys.is_empty() {
            return Err("--require-signature needs at least one --signing-key".into());
        }
        let dialects = self.dialect_config()?;
        let admin = AdminConfig::from_flags(self.admin_listen, self.admin_token, self.metrics_public)?;
        let mut pipeline = self.pipeline.into_config_as(CacheRole::Owner)?;
        pipeline.dialects = dialects;
        pipeline.signing = SigningPolicy { keys: self.signing_keys, required: self.require_signature };
        pipeline.fallback = match &self.fallback_image {
            Some(path) => {
                Some(Fallback::load(path, self.fallback_status, self.fallback_ttl, &pipeline.transform.limits)?)
            }
            None => None,
        };
        pipeline.cache_tag_header = parse_cache_tag_header(&self.cache_tag_header)?;
        Ok(Config {
            pipeline,
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout,
            max_request_bytes,
            max_uri_bytes: usize::try_from(self.max_uri_bytes).unwrap_or(usize::MAX),
            shutdown_timeout: self.shutdown_timeout,
            send_timeout: self.send_timeout,
            admin,
        })
    }
}

impl PipelineArgs {
    /// Checks the flags together and builds the `PipelineConfig` for a guest of the cache directory (`warm`).
    pub fn into_config(self) -> Result<PipelineConfig, String> {
        self.into_config_as(CacheRole::Guest)
    }

    /// Checks the flags together and builds the `PipelineConfig` for `role`.
    pub fn into_config_as(self, role: CacheRole) -> Result<PipelineConfig, String> {
        if self.min_ttl > self.max_ttl {
            return Err(format!("--min-ttl ({:?}) is longer than --max-ttl ({:?})", self.min_ttl, self.max_ttl));
        }
        let at_least_one = [
            ("--max-inflight-fetches", self.max_inflight_fetches as u64),
            ("--transform-workers", self.transform_workers.map_or(1, |workers| workers as u64)),
            ("--max-source-pixels", self.max_source_pixels),
            ("--max-output-pixels", self.max_output_pixels),
            ("--max-avif-pixels", self.max_avif_pixels),
            ("--max-frames", u64::from(self.max_frames)),
        ];
        if let Some((name, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.connect_timeout.is_zero() || self.fetch_timeout.is_zero() {
            return Err("--connect-timeout and --fetch-timeout must be longer than zero".into());
        }
        let disk = if self.no_disk_cache {
            None
        } else {
            let dir = match self.cache_dir {
                Some(dir) => dir,
                None => default_cache_dir().ok_or("no cache directory: set --cache-dir, $XDG_CACHE_HOME or $HOME")?,
            };
            let budget = resolve_disk_budget(&dir, self.disk_cache_size, role)?;
            Some((dir, budget))
        };
        if self.disk_timeout.is_zero() {
            return Err("--disk-timeout must be longer than zero".into());
        }
        if self.shared_timeout.is_zero() || self.shared_probe_interval.is_zero() || self.purge_poll.is_zero() {
            return Err("--shared-timeout, --shared-probe-interval and --purge-poll must be longer than zero".into());
        }
        let shared = self.shared_cache.map(|url| mirage_cache::shared::SharedOptions {
            url,
            timeout: self.shared_timeout,
            probe_interval: self.shared_probe_interval,
            purge_poll: self.purge_poll,
            // A lease outlives no fetch: past --fetch-timeout its holder has given up (or died).
            lease_ttl: self.fetch_timeout,
            // Nothing purged can still be served past its longest freshness plus the stale-if-error window.
            purge_retention: self.max_ttl.saturating_add(self.stale_if_error),
            // `warm` is there to fill the store: it waits for room in the write queue rather than drop a write.
            wait_for_queue: role == CacheRole::Guest,
        });
        Ok(PipelineConfig {
            cache: CacheConfig {
                memory_bytes: self.memory_cache_size,
                disk,
                record_budget: role == CacheRole::Owner,
                disk_timeout: self.disk_timeout,
                shared,
            },
            fetch: FetchConfig {
                user_agent: self.user_agent,
                connect_timeout: self.connect_timeout,
                total_timeout: self.fetch_timeout,
                max_body_bytes: self.max_source_bytes,
                max_redirects: self.max_redirects,
                network: NetworkPolicy { allow_private: self.allow_private_networks, allow_nets: self.allow_net },
                hosts: HostRules { allow: self.allow_host, deny: self.deny_host, ports: self.allow_port },
                name_lookup: std::sync::Arc::new(crate::fetch::SystemLookup),
            },
            freshness: FreshnessPolicy {
                min_ttl: self.min_ttl,
                max_ttl: self.max_ttl,
                default_ttl: self.default_ttl,
                stale_if_error: self.stale_if_error,
                negative_ttl: self.negative_ttl,
            },
            transform: TransformConfig {
                limits: Limits {
                    max_source_pixels: self.max_source_pixels,
                    max_output_pixels: self.max_output_pixels,
                    max_avif_pixels: self.max_avif_pixels,
                    max_frames: self.max_frames,
                },
                workers: self
                    .transform_workers
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)),
                queue: self.transform_queue,
            },
            max_inflight_fetches: self.max_inflight_fetches,
            retry_interval: self.retry_interval,
            signing: SigningPolicy::default(),
            dialects: DialectConfig::default(),
            clock: Clock::system(),
            fallback: None,
            // `serve` sets it from --cache-tag-header; the default here is serve's default.
            cache_tag_header: Some(http::HeaderName::from_static("cache-tag")),
        })
    }
}

/// The user's cache directory: `$XDG_CACHE_HOME/mirage`, else `~/.cache/mirage`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    non_empty("XDG_CACHE_HOME")
        .filter(|dir| dir.is_absolute())
        .or_else(|| non_empty("HOME").map(|home| home.join(".cache")))
        .map(|dir| dir.join("mirage"))
}
