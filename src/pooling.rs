//! How the classifier head reads the encoder's last hidden states: the `[CLS]` row (BERT's
//! own pooler, what `BertForSequenceClassification` does) or the mean of every token's row
//! (padding excluded), as sentence-embedding checkpoints are trained to be read.
//!
//! Either way the result then goes through the pooler's dense layer and `tanh`, and the
//! classifier. `sentimq train --pooling` records the choice in the adapter's
//! `adapter_config.json` (a full model's `config.json`); `sentimq build` builds the graph to
//! match and records it in `model.json`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which rows of the last hidden states reach the head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The `[CLS]` row (the first token).
    #[default]
    Cls,
    /// The mean of the rows of real tokens (attention mask 1), `[CLS]` and `[SEP]` included.
    Mean,
}

impl Pooling {
    /// The spelling on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
        }
    }

    /// True for the default (`cls`), which files leave unrecorded.
    pub fn is_default(&self) -> bool {
        *self == Pooling::Cls
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pooling name other than `cls` or `mean`.
#[derive(Debug, thiserror::Error)]
#[error("unknown pooling {0:?}: expected `cls` or `mean`")]
pub struct UnknownPooling(String);

impl FromStr for Pooling {
    type Err = UnknownPooling;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cls" => Ok(Pooling::Cls),
            "mean" => Ok(Pooling::Mean),
            other => Err(UnknownPooling(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_others_are_refused() {
        for pooling in [Pooling::Cls, Pooling::Mean] {
            assert_eq!(pooling.as_str().parse::<Pooling>().unwrap(), pooling);
            let json = serde_json::to_string(&pooling).unwrap();
            assert_eq!(json, format!("\"{pooling}\""));
        }
        let error = "max".parse::<Pooling>().unwrap_err();
        assert!(error.to_string().contains("\"max\""), "{error}");
    }
}
