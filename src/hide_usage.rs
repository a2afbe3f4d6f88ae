//! A response body that removes what llmtap's `include_usage` injection added
//! to a stream (see [`crate::inject::UsageFilter`]). Frames pass as they come;
//! an empty result is not sent as a frame.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};

use crate::inject::UsageFilter;

/// See the module docs.
pub struct HideUsage<B> {
    inner: B,
    filter: UsageFilter,
    flushed: bool,
}

impl<B> HideUsage<B> {
    pub fn new(inner: B) -> Self {
        HideUsage {
            inner,
            filter: UsageFilter::default(),
            flushed: false,
        }
    }
}

impl<B> Body for HideUsage<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        loop {
            return match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.filter.push(&data);
                        if out.is_empty() {
                            continue;
                        }
                        Poll::Ready(Some(Ok(Frame::data(out))))
                    }
                    Err(trailers) => Poll::Ready(Some(Ok(trailers))),
                },
                Poll::Ready(None) => {
                    if !this.flushed {
                        this.flushed = true;
                        let rest = this.filter.finish();
                        if !rest.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(rest))));
                        }
                    }
                    Poll::Ready(None)
                }
                other => other,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test]
    async fn filters_across_frames() {
        let frames = [
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n",
            "\ndata: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n",
            "data: [DONE]\n\n",
        ];
        let items: Vec<Result<Frame<Bytes>, std::io::Error>> = frames
            .iter()
            .map(|f| Ok(Frame::data(Bytes::from(*f))))
            .collect();
        let body = HideUsage::new(StreamBody::new(futures_util::stream::iter(items)));
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            &out[..],
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n"
        );
    }
}
