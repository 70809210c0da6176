//! `sentimq train` (feature `train`): the candle model against Hugging Face's golden hidden
//! states and the exported ONNX graph, overfitting, bit-exact resume, and input errors.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Tensor};
use sentimq::adapter::LoraAdapter;
use sentimq::checkpoint::Checkpoint;
use sentimq::data::{self, Split};
use sentimq::engine::Engine;
use sentimq::export::{self, BuildOptions, Precision};
use sentimq::pooling::Pooling;
use sentimq::tokenizer::{Encoded, TokenBatch, Truncation};
use sentimq::train::batches::{to_device, EncodedSet};
use sentimq::train::dropout::Mode;
use sentimq::train::{self, output, report, TrainConfig};

use crate::golden::golden_cases;
use crate::util::{assert_close, sentimq, shared};

fn tiny_fixture() -> PathBuf {
    shared("fixtures/tinybert-format")
}

/// A JSON Lines file of `n` balanced real IMDB training reviews, written once per `n`.
pub(crate) fn imdb_sample(n: usize) -> PathBuf {
    static TRAIN: OnceLock<Vec<data::Example>> = OnceLock::new();
    let examples = TRAIN.get_or_init(|| {
        let archive = shared("data/imdb/aclImdb_v1_labeled.tar.gz");
        let all = data::load(&archive, Split::Train).expect("reading the IMDB archive");
        data::take_balanced(all, 200, 7)
    });
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("imdb-train-{n}.jsonl"));
    let lines: String = examples
        .iter()
        .take(n)
        .map(|e| serde_json::json!({"text": e.text, "label": e.label}).to_string() + "\n")
        .collect();
    std::fs::write(&path, lines).expect("writing the sample");
    path
}

pub(crate) fn tiny_config(base: &Path, data: &Path, out: &Path) -> TrainConfig {
    let mut config = TrainConfig::new(base.to_string_lossy(), data, out);
    config.max_len = 64;
    config.head_len = 32;
    config.batch = 8;
    config.progress = false;
    config
}

fn check_golden(dir: &Path, golden_name: &str) {
    let cases = golden_cases(golden_name);
    let config = TrainConfig::new(dir.to_string_lossy(), "unused", "unused");
    let setup = train::build_model(&config, DType::F32).expect("building the model");
    for (i, case) in cases.iter().enumerate() {
        let n = case.input_ids.len();
        let ids = Tensor::from_slice(&case.input_ids, (1, n), &setup.device).unwrap();
        let mask = Tensor::ones((1, n), DType::F32, &setup.device).unwrap();
        let encoded = setup.model.encode(&ids, &mask, Mode::Eval).unwrap();
        let hidden = encoded.hidden.squeeze(0).unwrap();
        let first_8 = |t: Tensor| -> Vec<f32> { t.narrow(0, 0, 8).unwrap().to_vec1().unwrap() };
        let cls = first_8(hidden.get(0).unwrap());
        let mean = first_8(hidden.mean(0).unwrap());
        let pooled = first_8(encoded.pooled.get(0).unwrap());
        case.assert_matches(&cls, &mean, &pooled, &format!("{golden_name} case {i}"));
    }
}

#[test]
fn train_model_matches_transformers_on_tiny_fixtures() {
    for name in [
        "fixtures/tinybert-format",
        "fixtures/tinybert-format-legacy",
    ] {
        check_golden(&shared(name), "tinybert-format");
    }
}

#[test]
fn train_model_matches_transformers_on_minilm() {
    check_golden(&shared("models/all-MiniLM-L6-v2"), "all-MiniLM-L6-v2");
}

/// Randomizes every trainable tensor (LoRA B included, so the adapters matter), saves the
/// adapter, builds it with the build step (which reads the pooling the adapter records), and
/// compares the f32 ONNX logits with candle's on padded batches.
fn check_onnx_parity(base: &Path, reviews: usize, max_len: usize, pooling: Pooling) {
    let data = imdb_sample(reviews);
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(base, &data, dir.path());
    config.pooling = pooling;
    config.max_len = max_len;
    config.head_len = max_len / 2;
    config.lora.targets = vec!["query".into(), "value".into(), "intermediate.dense".into()];
    let setup = train::build_model(&config, DType::F32).expect("building the model");
    let mut rng = sentimq::rng::SplitMix64::new(11);
    for var in setup.params.trainable().values() {
        let noise: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.normal() as f32 * 0.05)
            .collect();
        let noise = Tensor::from_vec(noise, var.shape(), var.device()).unwrap();
        var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
    }
    let adapter_dir = dir.path().join("adapter");
    output::save_model(&adapter_dir, &setup.params, &config, &setup.base)
        .expect("saving the adapter");

    let mut options = BuildOptions::new(base.to_string_lossy(), dir.path().join("model"));
    options.adapter = Some(adapter_dir);
    options.precision = Precision::F32;
    options.truncation = Truncation::head_tail(config.max_len, config.head_len);
    let built = export::build(&options).expect("building the adapter");
    assert_eq!(
        built.manifest.pooling, pooling,
        "model.json records the pooling"
    );
    let engine =
        Engine::load(&dir.path().join("model").join("model.onnx")).expect("loading the graph");

    let examples = data::load(&data, Split::Train).unwrap();
    let set = train::dataset::encode(&examples, &setup.tokenizer, &mut 0).unwrap();
    for chunk in (0..set.len()).collect::<Vec<_>>().chunks(10) {
        let batch = to_device(&set, chunk, 0, &mut TokenBatch::default(), &setup.device).unwrap();
        let logits = setup
            .model
            .forward_t(&batch.ids, &batch.mask, Mode::Eval)
            .unwrap();
        let candle: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        let items: Vec<Encoded> = chunk.iter().map(|&i| set.items[i].clone()).collect();
        let outputs = engine
            .run_all(&TokenBatch::from_encoded(&items, 0))
            .unwrap();
        let onnx = &outputs
            .iter()
            .find(|o| o.name == "logits")
            .expect("logits output")
            .values;
        assert_close(
            &candle,
            onnx,
            1e-4,
            1e-4,
            &format!("logits of reviews {chunk:?}"),
        );
    }
}

#[test]
fn train_adapter_builds_to_onnx_with_equal_logits_tiny() {
    check_onnx_parity(&tiny_fixture(), 50, 128, Pooling::Cls);
}

#[test]
fn train_adapter_builds_to_onnx_with_equal_logits_minilm() {
    check_onnx_parity(&shared("models/all-MiniLM-L6-v2"), 10, 64, Pooling::Cls);
}

/// Mean pooling: padding must not reach the mean, in candle or in the graph (the reviews of a
/// batch differ in length).
#[test]
fn train_adapter_with_mean_pooling_builds_to_onnx_with_equal_logits() {
    check_onnx_parity(&tiny_fixture(), 50, 128, Pooling::Mean);
}

/// Through the binary: MiniLM learns 32 real reviews to 100 % training accuracy; every
/// output file is written.
#[test]
fn train_cli_overfits_32_reviews() {
    let (base, data) = (shared("models/all-MiniLM-L6-v2"), imdb_sample(32));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (ok, stdout, stderr) = sentimq(
        &[
            "train",
            "--base",
            base.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            "8",
            "--batch",
            "8",
            "--lr",
            "2e-3",
            "--max-len",
            "64",
            "--head-len",
            "32",
            "--validation-fraction",
            "0",
            "--quiet",
        ],
        None,
    );
    assert!(ok, "train failed:\n{stderr}");
    assert!(stdout.contains("steps      32"), "{stdout}");
    for file in [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "metrics.jsonl",
        "report.json",
        "report.txt",
        "curve.png",
    ] {
        assert!(
            out.join(file).is_file(),
            "{file} missing; stderr:\n{stderr}"
        );
    }
    let adapter: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(adapter["task_type"], "SEQ_CLS");
    assert_eq!(adapter["base_model_name_or_path"], base.to_str().unwrap());
    assert_eq!(
        adapter["modules_to_save"],
        serde_json::json!(["classifier", "pooler"])
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    for key in ["step", "epoch", "loss", "lr", "samples_per_s"] {
        assert!(
            first.get(key).is_some(),
            "metrics line lacks {key}: {first}"
        );
    }

    let config = tiny_config(&base, &data, &out);
    let setup = train::build_model(&config, DType::F32).unwrap();
    setup
        .params
        .restore_trainable(&output::load_model(&out.join("adapter"), &config).unwrap())
        .unwrap();
    let examples = data::load(&data, Split::Train).unwrap();
    let set: EncodedSet = train::dataset::encode(&examples, &setup.tokenizer, &mut 0).unwrap();
    let (metrics, _) = report::evaluate(&setup.model, &set, 8, 0, &setup.device).unwrap();
    assert_eq!(metrics.accuracy(), 1.0, "{:?}", metrics.report());
}

pub(crate) fn adapter_tensors(run: &Path) -> Vec<(String, Vec<f32>)> {
    let tensors =
        sentimq::checkpoint::read_safetensors(&run.join("adapter/adapter_model.safetensors"))
            .unwrap();
    tensors.into_iter().map(|(k, v)| (k, v.data)).collect()
}

/// Every update's loss in a run's `metrics.jsonl`.
pub(crate) fn step_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "step")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

/// Stopped at step 5 and resumed, a run ends with the adapter of an uninterrupted one.
#[test]
fn train_resume_continues_bit_for_bit() {
    let (base, data) = (tiny_fixture(), imdb_sample(40));
    let dir = tempfile::tempdir().unwrap();
    let config = |out: &str| {
        let mut config = tiny_config(&base, &data, &dir.path().join(out));
        config.epochs = 2;
        config.batch = 4;
        config.grad_accum = 2;
        config.validation_fraction = 0.2;
        config.checkpoint_every = Some(3);
        config.lr = Some(2e-3);
        config
    };
    let whole = train::run(&config("whole")).expect("uninterrupted run");
    assert_eq!(whole.steps, 8);
    let mut first = config("resumed");
    first.stop_after = Some(5);
    let stopped = train::run(&first).expect("interrupted run");
    assert!(stopped.report.is_none() && stopped.steps == 5);
    let mut again = config("resumed");
    again.resume = true;
    let resumed = train::run(&again).expect("resumed run");
    assert_eq!(resumed.steps, 8);

    let (a, b) = (
        adapter_tensors(&dir.path().join("whole")),
        adapter_tensors(&dir.path().join("resumed")),
    );
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert_close(y, x, 1e-6, 0.0, name);
    }
    let losses = |run: &str| step_losses(&dir.path().join(run));
    assert_eq!(losses("whole"), losses("resumed"));

    // Resuming with another base or other flags is refused, naming what differs.
    let mut other = config("resumed");
    other.resume = true;
    other.batch = 8;
    let error = train::run(&other).unwrap_err().to_string();
    assert!(error.contains("--batch = 4"), "{error}");
    let legacy = shared("fixtures/tinybert-format-legacy");
    let mut other = config("resumed");
    other.resume = true;
    other.base = legacy.to_string_lossy().into_owned();
    let error = train::run(&other).unwrap_err().to_string();
    assert!(error.contains("--base"), "{error}");
}

/// `--init-from`: a second stage starts from the first run's kept adapter, tensor for tensor;
/// a kept model of another shape, or from a run that held out other validation reviews, is
/// refused, naming what differs.
#[test]
fn train_init_from_starts_from_an_earlier_runs_adapter() {
    let (base, data) = (tiny_fixture(), imdb_sample(40));
    let dir = tempfile::tempdir().unwrap();
    let mut first = tiny_config(&base, &data, &dir.path().join("first"));
    first.epochs = 1;
    first.batch = 4;
    first.lr = Some(2e-3);
    train::run(&first).expect("first stage");
    let kept = dir.path().join("first/adapter");
    let kept_tensors = output::load_model(&kept, &first).expect("reading the kept adapter");

    let mut second = tiny_config(&base, &data, &dir.path().join("second"));
    second.init_from = Some(kept.clone());
    second.lr = Some(1e-3);
    second.spans_per_review = 2;
    let setup = train::build_model(&second, DType::F32).expect("second stage");
    let started = setup.params.trainable_to_host().expect("trainable tensors");
    assert_eq!(started.len(), kept_tensors.len());
    for (name, tensor) in &kept_tensors {
        assert_eq!(started[name].data, tensor.data, "{name}");
    }
    // The first stage trained something: its adapters are not a fresh initialisation.
    let fresh = train::build_model(&tiny_config(&base, &data, dir.path()), DType::F32)
        .expect("fresh model")
        .params
        .trainable_to_host()
        .expect("trainable tensors");
    assert!(kept_tensors
        .iter()
        .any(|(name, t)| fresh[name].data != t.data));

    type Change = fn(&mut TrainConfig);
    let changes: [(Change, &str); 4] = [
        (|c| c.lora.r = 4, "lora_A.weight is [8,"),
        (|c| c.lora.alpha = 8.0, "lora_alpha is 16"),
        (|c| c.seed = 9, "seed = 42, this run has 9"),
        (
            |c| c.lora.targets = vec!["query".into()],
            "which this run does not",
        ),
    ];
    for (change, expected) in changes {
        let mut other = second.clone();
        change(&mut other);
        let error = match train::build_model(&other, DType::F32) {
            Ok(_) => panic!("a mismatched --init-from was accepted"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains("--init-from") && error.contains(expected),
            "{error}"
        );
    }

    // `--full` from the adapter: every weight starts as the base merged with the adapter.
    let mut full = second.clone();
    full.full = true;
    let started = train::build_model(&full, DType::F32)
        .expect("full fine-tuning from an adapter")
        .params
        .trainable_to_host()
        .expect("trainable tensors");
    let checkpoint = Checkpoint::load(&base).expect("the base");
    let mut merged = checkpoint.tensors.clone();
    let adapter = LoraAdapter::load(&kept).expect("the kept adapter");
    adapter
        .merge_into(&mut merged, &checkpoint.config)
        .expect("merging");
    assert_eq!(started.len(), merged.len());
    for (name, tensor) in &merged {
        assert_eq!(started[name].data, tensor.data, "{name}");
    }
    let query = "encoder.layer.0.attention.self.query.weight";
    assert_ne!(started[query].data, checkpoint.tensors[query].data);
}

/// Bad input through the binary: each error names the cause.
#[test]
fn train_cli_reports_bad_input() {
    let base = tiny_fixture();
    let dir = tempfile::tempdir().unwrap();
    let base = base.to_str().unwrap();
    let run = |data: &Path, extra: &[&str]| -> String {
        let out = dir.path().join("out");
        let mut args = vec![
            "train",
            "--base",
            base,
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ];
        args.extend_from_slice(extra);
        let (ok, _, stderr) = sentimq(&args, None);
        assert!(!ok, "{args:?} succeeded");
        stderr
    };
    let missing = dir.path().join("no-such-dir");
    assert!(run(&missing, &[]).contains("no such file or directory"));

    let empty = dir.path().join("empty");
    for sub in ["train/pos", "train/neg"] {
        std::fs::create_dir_all(empty.join(sub)).unwrap();
    }
    let stderr = run(&empty, &[]);
    assert!(stderr.contains("no train examples"), "{stderr}");

    let bad_labels = dir.path().join("bad.csv");
    std::fs::write(&bad_labels, "text,label\ngreat,1\nawful,2\n").unwrap();
    let stderr = run(&bad_labels, &[]);
    assert!(stderr.contains("bad label \"2\""), "{stderr}");

    let good = dir.path().join("good.csv");
    std::fs::write(&good, "text,label\ngreat,1\nawful,0\nfine,1\nbad,0\n").unwrap();
    let stderr = run(&good, &["--batch", "100000000"]);
    assert!(
        stderr.contains("--batch 100000000") && stderr.contains("MiB"),
        "{stderr}"
    );
    let stderr = run(&good, &["--lora-targets", "qkv"]);
    assert!(stderr.contains("unknown module \"qkv\""), "{stderr}");
    let stderr = run(&good, &["--resume"]);
    assert!(stderr.contains("--resume: no checkpoint"), "{stderr}");
    let stderr = run(&good, &["--eval-test", "10"]);
    assert!(stderr.contains("--eval-test"), "{stderr}");
    #[cfg(not(feature = "cuda"))]
    {
        let stderr = run(&good, &["--device", "cuda"]);
        assert!(stderr.contains("--features cuda"), "{stderr}");
    }
}

/// Training throughput at the setting: MiniLM, LoRA r=8 on query+value, 16 reviews of
/// 128 tokens (all long enough to fill the window), forward + backward + AdamW step.
/// `cargo test --release --features train --test it train_throughput -- --ignored --nocapture`
/// (threads from `RAYON_NUM_THREADS`/`CANDLE_NUM_THREADS`).
#[test]
#[ignore = "a measurement, minutes on a loaded machine"]
fn train_throughput_minilm() {
    let (base, data) = (shared("models/all-MiniLM-L6-v2"), imdb_sample(200));
    let (samples_per_s, seconds_per_step) =
        training_throughput(&base, &data, train::DeviceSpec::Cpu, 5);
    println!(
        "MiniLM LoRA r=8 q+v, batch 16 × 128 tokens: {samples_per_s:.2} samples/s ({seconds_per_step:.2} s per step, {} threads)",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into())
    );
}

/// Samples per second and seconds per update of LoRA r=8 on query+value training of `base` on
/// `device`: 16 reviews of `data` that fill 128 tokens, forward + backward + AdamW step, after
/// one warm-up update (`sentimq train --throughput`).
pub(crate) fn training_throughput(
    base: &Path,
    data: &Path,
    device: train::DeviceSpec,
    steps: u64,
) -> (f64, f64) {
    let mut config = TrainConfig::new(base.to_string_lossy(), data, "unused");
    config.max_len = 128;
    config.head_len = 64;
    config.device = device;
    let measured = train::throughput::measure(&config, steps as usize).unwrap();
    println!("{}", serde_json::to_string(&measured).unwrap());
    (measured.samples_per_s, measured.ms_per_step / 1e3)
}

/// The real run: MiniLM, 4,000 balanced training reviews (400 held out), max-len 128,
/// one epoch, then 1,000 test reviews: at least 80 % accuracy.
/// `cargo test --release --features train --test it train_real_run -- --ignored --nocapture`
#[test]
#[ignore = "a real training run: about 3 minutes on 2 cores"]
fn train_real_run_minilm_reaches_80_percent() {
    let (base, archive) = (
        shared("models/all-MiniLM-L6-v2"),
        shared("data/imdb/aclImdb_v1_labeled.tar.gz"),
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("real-run-minilm");
    let _ = std::fs::remove_dir_all(&out);
    let mut config = TrainConfig::new(base.to_string_lossy(), &archive, &out);
    config.limit = Some(4000);
    config.max_len = 128;
    config.head_len = 64;
    config.epochs = 1;
    config.eval_test = Some(1000);
    let started = std::time::Instant::now();
    let report = train::run(&config).unwrap().report.unwrap();
    println!("{report}\n({:.0} s)", started.elapsed().as_secs_f64());
    let test = report.test.unwrap();
    assert!(test.accuracy >= 0.80, "test accuracy {}", test.accuracy);
}

/// `--full` trains every weight and writes a checkpoint directory the loaders read back.
#[test]
fn train_full_writes_a_loadable_checkpoint() {
    let (base, data) = (tiny_fixture(), imdb_sample(16));
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(&base, &data, dir.path());
    config.full = true;
    config.epochs = 1;
    config.validation_fraction = 0.25;
    let outcome = train::run(&config).expect("full fine-tuning");
    assert_eq!(outcome.steps, 2);
    let model = dir.path().join("model");
    let trained = sentimq::checkpoint::Checkpoint::load(&model).expect("loading model/");
    let original = sentimq::checkpoint::Checkpoint::load(&base).unwrap();
    let name = "encoder.layer.0.attention.self.query.weight";
    assert_ne!(trained.get(name).unwrap(), original.get(name).unwrap());
    assert!(trained.tensors.contains_key("classifier.weight"));
    assert!(!dir.path().join("adapter").exists());

    // `build` takes model/ as the base, with its own classifier and its calibration.
    let calibration = sentimq::calibration::Calibration::read(&model)
        .unwrap()
        .expect("calibration.json next to the full checkpoint");
    let mut options = BuildOptions::new(model.to_string_lossy(), dir.path().join("built"));
    options.precision = Precision::F32;
    options.truncation = Truncation::head_tail(64, 32);
    let built = export::build(&options).expect("building the full checkpoint");
    assert_eq!(built.manifest.temperature, Some(calibration.temperature));
    assert!(built.manifest.adapter.is_none());
    // The base alone has no classifier for two labels: an adapter is still asked for.
    let options = BuildOptions::new(base.to_string_lossy(), dir.path().join("plain"));
    let error = export::build(&options).unwrap_err().to_string();
    assert!(error.contains("--adapter"), "{error}");
}

/// A run with a validation split fits a temperature on it (`calibration.json` next to the
/// adapter, and the report), with `--spans-per-review` adding a span per review; `build` folds
/// it into the classifier (logits divided by T, recorded in model.json) unless
/// `--temperature 1`.
#[test]
fn train_calibrates_and_build_divides_the_logits() {
    let (base, data) = (tiny_fixture(), imdb_sample(40));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (ok, _, stderr) = sentimq(
        &[
            "train",
            "--base",
            base.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            "1",
            "--max-len",
            "64",
            "--head-len",
            "32",
            "--validation-fraction",
            "0.25",
            "--spans-per-review",
            "1",
            "--quiet",
        ],
        None,
    );
    assert!(ok, "train failed:\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    // 30 training and 10 validation reviews, each with (almost always) one span more.
    let (train_count, validation_count) = (
        report["examples"]["train"].as_u64().unwrap(),
        report["examples"]["validation"].as_u64().unwrap(),
    );
    assert!(train_count > 50 && validation_count > 15, "{report}");
    let adapter = out.join("adapter");
    let calibration = sentimq::calibration::Calibration::read(&adapter)
        .unwrap()
        .expect("calibration.json next to the adapter");
    assert_eq!(calibration.examples as u64, validation_count);
    assert_eq!(
        report["calibration"]["temperature"],
        calibration.temperature
    );
    assert!(calibration.nll_after <= calibration.nll_before + 1e-9);

    let logits_of = |temperature: Option<f64>, name: &str| {
        let mut options = BuildOptions::new(base.to_string_lossy(), dir.path().join(name));
        options.adapter = Some(adapter.clone());
        options.precision = Precision::F32;
        options.truncation = Truncation::head_tail(64, 32);
        options.temperature = temperature;
        let built = export::build(&options).expect("building");
        let engine = Engine::load(&dir.path().join(name).join("model.onnx")).unwrap();
        let tokenizer = sentimq::tokenizer::TextTokenizer::from_dir(
            &dir.path().join(name),
            Truncation::head_tail(64, 32),
        )
        .unwrap();
        let items = vec![tokenizer.encode("A moving, wonderful film.").unwrap()];
        let outputs = engine
            .run_all(&TokenBatch::from_encoded(&items, 0))
            .unwrap();
        let logits = outputs
            .iter()
            .find(|o| o.name == "logits")
            .unwrap()
            .values
            .clone();
        (built.manifest.temperature, logits)
    };
    let (calibrated_t, calibrated) = logits_of(None, "calibrated");
    let (plain_t, plain) = logits_of(Some(1.0), "plain");
    assert_eq!(
        (calibrated_t, plain_t),
        (Some(calibration.temperature), Some(1.0))
    );
    for (c, p) in calibrated.iter().zip(&plain) {
        assert!(
            (c * calibration.temperature as f32 - p).abs() < 1e-4,
            "{c} · T vs {p}"
        );
    }
}
