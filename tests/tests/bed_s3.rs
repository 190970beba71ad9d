//! The bed's Garage speaks S3 the way Ferry uses it: put, get, conditional GET → 304.

use aws_sdk_s3::primitives::ByteStream;
use ferry_tests::{Bed, BedOptions};

#[tokio::test]
async fn garage_puts_gets_and_answers_304_to_a_matching_if_none_match() -> anyhow::Result<()> {
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
    let got = client
        .get_object()
        .bucket(&s3.bucket)
        .key("smoke/hello.txt")
        .send()
        .await?;
    let etag = got.e_tag().map(str::to_string);
    assert_eq!(
        got.body.collect().await?.into_bytes().as_ref(),
        b"hello, bed"
    );
    let etag = etag.ok_or_else(|| anyhow::anyhow!("Garage sent no ETag"))?;

    let conditional = client
        .get_object()
        .bucket(&s3.bucket)
        .key("smoke/hello.txt")
        .if_none_match(&etag)
        .send()
        .await;
    let err = match conditional {
        Ok(_) => anyhow::bail!("a GET with the current ETag in If-None-Match returned the object"),
        Err(err) => err,
    };
    let status = err
        .raw_response()
        .map(|response| response.status().as_u16());
    assert_eq!(status, Some(304), "{err:?}");

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
