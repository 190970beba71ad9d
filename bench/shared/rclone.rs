//! `rclone` against the bed's Garage as the remote `garage:`, configured through the
//! environment only (no config file is read or written): the benchmarks' baseline tool.

use std::process::Command;

use ferry_tests::S3;

/// `rclone ARGS…` with the remote `garage:` pointing at `s3` (path style, its keys).
pub fn rclone(s3: &S3) -> Command {
    let mut command = Command::new("rclone");
    command
        // rclone 1.60 refuses the machine's AWS_CA_BUNDLE (LoadCustomCABundleError).
        .env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG_GARAGE_TYPE", "s3")
        .env("RCLONE_CONFIG_GARAGE_PROVIDER", "Other")
        .env("RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID", &s3.access_key)
        .env("RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY", &s3.secret_key)
        .env("RCLONE_CONFIG_GARAGE_ENDPOINT", &s3.endpoint)
        .env("RCLONE_CONFIG_GARAGE_REGION", &s3.region)
        .env("RCLONE_CONFIG_GARAGE_FORCE_PATH_STYLE", "true");
    command
}
