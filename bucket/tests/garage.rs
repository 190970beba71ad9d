//! `S3Bucket` against the test bed's real Garage: every trait operation, a multipart upload
//! and the error kinds (missing key, unreachable endpoint). Every bucket here is opened the
//! way Ferry opens one, from its own settings (`S3::ferry_bucket`: the `s3://` URL and a
//! credentials file, through `S3Bucket::new`), so what Garage sees is Ferry's client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_bucket::{
    Bucket, BucketError, BucketUrl, Fetched, PutCondition, PutOutcome, S3Bucket, S3Settings,
};
use ferry_tests::{Bed, BedOptions};

#[tokio::test]
async fn s3_bucket_operations_against_garage() -> anyhow::Result<()> {
    let bed = Bed::start(BedOptions::default())?;
    let dir = tempfile::tempdir()?;
    let b = bed.s3().ferry_bucket(dir.path()).await?;

    assert_eq!(b.get("manifest.json", None).await?, Fetched::Missing);
    assert!(!b.exists("manifest.json").await?);
    b.put("manifest.json", b"{\"v\":1}".to_vec()).await?;
    let Fetched::Found { bytes, etag } = b.get("manifest.json", None).await? else {
        panic!("expected the object");
    };
    assert_eq!(bytes, b"{\"v\":1}");
    let etag = etag.expect("Garage sends ETags");
    assert_eq!(
        b.get("manifest.json", Some(&etag)).await?,
        Fetched::Unchanged
    );
    assert!(b.exists("manifest.json").await?);

    // 40 MiB crosses the multipart threshold (32 MiB): three parts.
    let big = dir.path().join("big.nar.zst");
    let content: Vec<u8> = (0..40 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &content)?;
    let before = b.requests();
    b.put_file("nar/big.nar.zst", &big).await?;
    assert_eq!(
        b.requests() - before,
        1 + 3 + 1,
        "create, 3 parts, complete"
    );
    let Fetched::Found { bytes, .. } = b.get("nar/big.nar.zst", None).await? else {
        panic!("expected the multipart object");
    };
    assert!(bytes == content, "multipart object differs from the file");
    // The same object read as it arrives.
    let mut reader = b
        .get_reader("nar/big.nar.zst")
        .await?
        .expect("the object exists");
    assert_eq!(reader.len, Some(content.len() as u64));
    let mut streamed = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut reader.body, &mut streamed).await?;
    assert!(streamed == content, "streamed object differs from the file");
    assert!(b.get_reader("nar/absent.nar.zst").await?.is_none());
    let small = dir.path().join("small");
    std::fs::write(&small, b"small")?;
    b.put_file("nar/small.nar.zst", &small).await?;

    let listed: Vec<(String, u64, bool)> = b
        .list("nar/")
        .await?
        .into_iter()
        .map(|o| (o.key, o.size, o.modified.is_some()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("nar/big.nar.zst".to_owned(), content.len() as u64, true),
            ("nar/small.nar.zst".to_owned(), 5, true),
        ]
    );
    b.copy("manifest.json", "manifests/manifest-1.json").await?;
    let Fetched::Found { bytes, .. } = b.get("manifests/manifest-1.json", None).await? else {
        panic!("expected the copy");
    };
    assert_eq!(bytes, b"{\"v\":1}");
    assert!(matches!(
        b.copy("absent.json", "x.json").await,
        Err(BucketError::NotFound(_))
    ));
    b.delete("nar/small.nar.zst").await?;
    b.delete("nar/small.nar.zst").await?;
    assert!(!b.exists("nar/small.nar.zst").await?);
    assert_eq!(b.list("").await?.len(), 3);
    Ok(())
}

/// Garage ignores `If-Match` and `If-None-Match` on PUT (REFERENCE.md): the probe must
/// say so, and leave no scratch object behind.
#[tokio::test]
async fn garage_conditional_write_probe_says_unsupported() -> anyhow::Result<()> {
    let bed = Bed::start(BedOptions::default())?;
    let dir = tempfile::tempdir()?;
    let b = bed.s3().ferry_bucket(dir.path()).await?;
    let before = b.requests();
    assert!(!b.conditional_writes().await?);
    let probed = b.requests() - before;
    // Asked again: the answer is cached, no request.
    assert!(!b.conditional_writes().await?);
    assert_eq!(b.requests() - before, probed);
    assert!(
        b.list("").await?.is_empty(),
        "the probe left objects behind"
    );
    // What the probe found, seen directly: the condition is ignored and the write lands.
    b.put("k", b"one".to_vec()).await?;
    assert_eq!(
        b.put_if("k", b"two".to_vec(), PutCondition::IfAbsent)
            .await?,
        PutOutcome::Written
    );
    Ok(())
}

#[tokio::test]
async fn unreachable_endpoint_is_reported_as_unreachable() {
    let url = BucketUrl::parse("s3://nothing?endpoint=http://127.0.0.1:9&region=garage").unwrap();
    let BucketUrl::S3 {
        bucket,
        endpoint,
        region,
        ..
    } = url
    else {
        unreachable!()
    };
    let b = S3Bucket::new(&S3Settings {
        bucket,
        endpoint,
        region: Some(region),
        timeout: std::time::Duration::from_secs(10),
        ..S3Settings::default()
    })
    .await;
    let err = b.exists("manifest.json").await.unwrap_err();
    assert!(matches!(err, BucketError::Unreachable(_)), "{err}");
}

/// Issue 21.5: every bucket value probes for itself, on every run (no answer is kept
/// across stores or runs), and the probe's answer is what this Garage really does with
/// conditional PUTs, checked directly here: a fresh client probes again, a `file://`
/// bucket in between answers for itself.
#[tokio::test]
async fn every_bucket_probes_for_itself_and_the_answer_is_what_garage_does() -> anyhow::Result<()> {
    let bed = Bed::start(BedOptions::default())?;
    let s3 = bed.s3();
    let dir = tempfile::tempdir()?;
    // What Garage does, seen directly: a PUT whose condition cannot hold.
    let direct = s3.ferry_bucket(dir.path()).await?;
    direct.put("seen/k", b"one".to_vec()).await?;
    let if_match = direct
        .put_if(
            "seen/k",
            b"two".to_vec(),
            PutCondition::IfMatch("\"no-such-etag\"".into()),
        )
        .await?;
    let if_absent = direct
        .put_if("seen/k", b"three".to_vec(), PutCondition::IfAbsent)
        .await?;
    let honours =
        if_match == PutOutcome::PreconditionFailed && if_absent == PutOutcome::PreconditionFailed;
    eprintln!("Garage: If-Match -> {if_match:?}, If-None-Match: * -> {if_absent:?}");
    direct.delete("seen/k").await?;

    let first = s3.ferry_bucket(dir.path()).await?;
    assert_eq!(first.conditional_writes().await?, honours);
    let probe_requests = first.requests();
    assert!(probe_requests >= 3, "no probe was made ({probe_requests})");

    let scratch = tempfile::tempdir()?;
    let local = ferry_bucket::DirBucket::new(scratch.path().to_owned());
    assert!(local.conditional_writes().await?);

    // A new client (a new `ferry` run) does not inherit an answer: it probes again.
    let second = s3.ferry_bucket(dir.path()).await?;
    assert_eq!(second.conditional_writes().await?, honours);
    assert_eq!(second.requests(), probe_requests);
    assert!(second.list("").await?.is_empty(), "a probe object was left");
    Ok(())
}
