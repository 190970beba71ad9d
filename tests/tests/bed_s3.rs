//! The bed's Garage speaks S3 the way Ferry uses it (conditional GET), on ports of its own,
//! and comes back from an outage with its data.

use aws_sdk_s3::primitives::ByteStream;
use ferry_tests::{Bed, BedOptions};

// Put, get and the 304 to a matching If-None-Match are in bed_smoke.rs; this is the other
// half of the conditional GET the agent's poll relies on.
#[tokio::test]
async fn garage_answers_a_non_matching_if_none_match_with_the_object() -> anyhow::Result<()> {
    let bed = Bed::start(BedOptions::default())?;
    let s3 = bed.s3();
    assert_eq!(s3.region, "garage");
    let client = s3.client();
    client
        .put_object()
        .bucket(&s3.bucket)
        .key("smoke/hello.txt")
        .body(ByteStream::from_static(b"hello, bed"))
        .send()
        .await?;
    let other = client
        .get_object()
        .bucket(&s3.bucket)
        .key("smoke/hello.txt")
        .if_none_match("\"not-the-etag\"")
        .send()
        .await?;
    assert_eq!(
        other.body.collect().await?.into_bytes().as_ref(),
        b"hello, bed"
    );
    Ok(())
}

#[tokio::test]
async fn a_halted_garage_refuses_requests_and_resumes_with_its_data() -> anyhow::Result<()> {
    let mut bed = Bed::start(BedOptions::default())?;
    let s3 = bed.s3().clone();
    s3.client()
        .put_object()
        .bucket(&s3.bucket)
        .key("outage/kept.txt")
        .body(ByteStream::from_static(b"still here"))
        .send()
        .await?;
    bed.halt_garage();
    // A fresh client: a pooled connection to the dead server must not decide the answer.
    let during = s3
        .client()
        .get_object()
        .bucket(&s3.bucket)
        .key("outage/kept.txt")
        .send()
        .await;
    assert!(during.is_err(), "Garage answered while halted");
    bed.resume_garage()?;
    let after = s3
        .client()
        .get_object()
        .bucket(&s3.bucket)
        .key("outage/kept.txt")
        .send()
        .await?;
    assert_eq!(
        after.body.collect().await?.into_bytes().as_ref(),
        b"still here"
    );
    Ok(())
}

#[tokio::test]
async fn garage_takes_free_ports_even_when_its_usual_port_is_taken_on_every_address()
-> anyhow::Result<()> {
    // Something else on the machine listening on [::]:3900 / 0.0.0.0:3900 (say a developer's
    // own Garage) must not stop a bed. When the port is already taken, that is the case too.
    let _squatter = std::net::TcpListener::bind("0.0.0.0:3900").ok();
    let bed = Bed::start(BedOptions::default())?;
    let s3 = bed.s3();
    assert!(!s3.endpoint.ends_with(":3900"), "{}", s3.endpoint);
    s3.client()
        .put_object()
        .bucket(&s3.bucket)
        .key("ports/ok.txt")
        .body(ByteStream::from_static(b"ok"))
        .send()
        .await?;
    Ok(())
}
