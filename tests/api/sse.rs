//! A small reader of `text/event-stream` responses for tests: it shows the frames as
//! they are on the wire (heartbeat comments included), which the SDK's parser hides.

use reqwest::Response;
use serde_json::Value;
use std::time::Duration;

/// Long enough for anything that should arrive; only there so a failure cannot hang.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// One frame of the stream.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    /// `event:` (empty for a comment-only frame).
    pub event: String,
    /// `id:`.
    pub id: Option<u64>,
    /// `data:` lines joined.
    pub data: String,
    /// Comment lines (`: heartbeat`).
    pub comments: Vec<String>,
}

impl Frame {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }

    pub fn is_heartbeat(&self) -> bool {
        self.event.is_empty() && self.data.is_empty() && !self.comments.is_empty()
    }
}

/// Reads frames off a streaming response.
pub struct EventReader {
    response: Response,
    buffer: Vec<u8>,
    scanned: usize,
}

impl EventReader {
    pub fn new(response: Response) -> Self {
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(content_type.starts_with("text/event-stream"), "content type {content_type}");
        EventReader { response, buffer: Vec::new(), scanned: 0 }
    }

    /// The next frame, `None` when the stream ended; panics past [`DEADLINE`].
    pub async fn next_frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(DEADLINE, self.read_frame()).await.expect("a frame (or the end) before the deadline")
    }

    /// The next event, skipping heartbeats; `None` when the stream ended.
    pub async fn next_event(&mut self) -> Option<Frame> {
        loop {
            match self.next_frame().await {
                Some(frame) if frame.is_heartbeat() => continue,
                other => return other,
            }
        }
    }

    /// The next event, which must be there.
    pub async fn expect_event(&mut self) -> Frame {
        self.next_event().await.expect("an event, not the end of the stream")
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer[self.scanned..].windows(2).position(|w| w == b"\n\n") {
                let end = self.scanned + end;
                let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
                self.scanned = 0;
                return Some(parse(&String::from_utf8(raw).expect("UTF-8 frame")));
            }
            self.scanned = self.buffer.len().saturating_sub(1);
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => return None,
                Err(e) => panic!("stream failed: {e}"),
            }
        }
    }
}

fn parse(raw: &str) -> Frame {
    let mut frame = Frame::default();
    for line in raw.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            frame.comments.push(comment.trim().to_owned());
        } else if let Some(event) = line.strip_prefix("event:") {
            frame.event = event.trim().to_owned();
        } else if let Some(id) = line.strip_prefix("id:") {
            frame.id = Some(id.trim().parse().expect("numeric id"));
        } else if let Some(data) = line.strip_prefix("data:") {
            if !frame.data.is_empty() {
                frame.data.push('\n');
            }
            frame.data.push_str(data.strip_prefix(' ').unwrap_or(data));
        }
    }
    frame
}
