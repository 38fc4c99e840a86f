"""Fine-tuning a pretrained BERT encoder on a downstream task (Devlin et al. 2019, section 4).
The argument is the task: bbc_topic (default), bbc_same_article, bbc_quotes, bbc_who_said
(bundled, offline), sst2, mnli, conll2003, squad (TFDS, once prepared), and file (your own CSV,
TSV or JSONL files of labelled texts; docs/data.md).

  ssljax finetune --workdir runs/bert --task bbc_topic
  ssljax finetune --workdir runs/bert --task bbc_topic --config.init=scratch
  ssljax finetune --workdir runs/bert --task bbc_topic --config.labels_per_class=10
  ssljax finetune --workdir runs/bert --task bbc_quotes --config.label_fraction=0.01
  ssljax finetune --workdir runs/bert --task file --config.data_path=reviews.csv --config.label_field=stars

The same config trains one fine-tuning run with the trainer (objective "finetune": checkpoints,
exact resume, metrics, several devices), on draw `draw` of the label budget, with the learning
rate `optim.lr` for `train.steps` steps, and ends with the test split's metrics (eval.json):

  ssljax train --config configs/finetune.py:bbc_topic --config.init_from=runs/bert --workdir runs/ft

Recipe (BERT's appendix A.3, scaled to small encoders): AdamW, weight decay 0.01, 10% linear
warmup then linear decay, dropout 0.1, batch 32, 3 epochs, the learning rate chosen on the
validation split among `lrs`. Small encoders like larger rates than BERT-base's 2e-5..5e-5.
With few labels an epoch is a handful of steps, so every run takes at least `min_steps`.
"""

import ml_collections
from ml_collections import config_dict

from ssljax import evaluators
from ssljax.train.defaults import base_config, check_variant

TASKS = ("bbc_topic", "bbc_same_article", "bbc_quotes", "bbc_who_said", "sst2", "mnli", "conll2003", "squad", "file")


def get_config(task: str = "bbc_topic") -> ml_collections.ConfigDict:
  task = check_variant("fine-tuning", task or "bbc_topic", TASKS, kind="task")
  c = base_config()
  c.objective = "finetune"
  c.task = task
  c.init = "pretrained"  # or "scratch": the same encoder, randomly initialised
  c.seed = 0

  c.seq_len = 0  # 0: the encoder's context (its max_len); otherwise at most that
  c.batch_size = 32
  # > 0: the batch size under a label budget (labels_per_class, label_fraction), in place of
  # batch_size, which then applies to all-label runs only.
  c.few_label_batch_size = 0
  c.eval_batch_size = 64
  c.epochs = 3.0
  c.min_steps = 30  # few labels: 10 per class is under two batches; 5 draws x 2 rates x 30 steps
  c.max_steps = 0  # > 0: cap on the steps of one training run
  # Candidates, chosen on the validation split: the ends of the 1e-4..5e-4 range that suits small
  # encoders (a briefly pretrained bbc_news BERT on bbc_topic: 3e-4 beat 1e-4 by 13 points on validation).
  c.lrs = (1e-4, 5e-4)
  c.schedule = "linear"  # or "cosine"
  c.warmup_fraction = 0.1
  c.weight_decay = 0.01
  c.clip_norm = 1.0
  c.dropout = 0.1
  # Classification and pair heads: "cls" pools BERT's [CLS] state; "mean" the average of the
  # real tokens' states; pairs only: "segments" classifies Sentence-BERT's (u, v, |u - v|) of the
  # two segments' mean states, "cosine" thresholds their cosine (ssljax.downstream.heads).
  c.pooling = "cls"
  # > 0: LP-FT (Kumar et al. 2022, arXiv 2202.10054): first the head alone is fitted on the
  # frozen encoder's states of the labelled examples by full-batch L-BFGS, at most this many
  # iterations, then the whole model is fine-tuned from there (ssljax.finetune.train.Runner.fit_head).
  c.probe_steps = 0

  # Label budget: all labels by default; or k labelled examples per class (classification),
  # or a fraction of the training examples (any task), averaged over `draws` draws.
  c.labels_per_class = 0
  c.label_fraction = 1.0
  c.draws = 5

  # Spans: the longest answer predicted (tokens), the question's share of the input, and the
  # step between the windows of a passage longer than the input.
  c.max_answer_len = 30
  c.max_question_len = 32
  c.doc_stride = 64

  c.max_train_examples = 0  # > 0: a fixed random subset of the training examples (0: all)
  c.max_eval_examples = 0  # > 0: the same for validation and test (quick trials only)
  c.baseline = True  # TF-IDF + logistic regression, majority tag or surface heuristic beside it
  c.output_dir = config_dict.placeholder(str)  # None: <pretrained workdir>/finetune/<run name>
  c.data_dir = config_dict.placeholder(str)  # TFDS data dir of public tasks; None: $SSLJAX_DATA_DIR
  c.splits = ml_collections.ConfigDict()  # TFDS split per role of a public task; None: the task's
  for role in ("train", "validation", "test"):
    c.splits[role] = config_dict.placeholder(str)

  # Sized so that a run on the bbc_news BERT (4 layers of width 128, 128 tokens) takes 2 to 4
  # minutes on 2 CPU cores (about 0.5 s a step): some 170 steps per learning rate.
  if task == "bbc_topic":
    # Chosen on the validation split (docs/bert.md): 3 epochs left the training loss high, and 6
    # epochs at either rate keep both runs within about 4 minutes on 2 CPU cores.
    c.epochs, c.lrs = 6.0, (5e-4, 1e-3)
    # Mean pooling, chosen on validation: it tied [CLS] with all labels and beat it by 9 points
    # with 10 labels per class (docs/bert.md).
    c.pooling = "mean"
    # 10 labels per class are 2 batches an epoch: train longer than the general 30 steps, as
    # Zhang et al. 2021 advise for few-sample fine-tuning (arXiv 2006.05987); 120 steps of 16 read
    # as 80 of 32 on validation in less time (docs/bert.md).
    c.min_steps, c.few_label_batch_size = 120, 16
  if task == "bbc_same_article":
    # A head that compares the two segments' mean states: from [CLS] the task stayed at chance.
    # The cosine of u and v with a threshold fitted first on the frozen encoder (LP-FT,
    # probe_steps) learns it with 10 pairs per class too, where Sentence-BERT's (u, v, |u - v|)
    # stayed at chance; chosen on validation (docs/bert.md).
    c.pooling, c.probe_steps, c.epochs = "cosine", 200, 3.0  # 3,562 pairs
  if task == "bbc_quotes":
    c.epochs = 1.5  # 3,666 paragraphs
  if task == "bbc_who_said":
    c.epochs = 4.0  # 935 questions
  if task in ("sst2", "mnli"):
    c.lrs = (5e-5, 1e-4, 3e-4)
    c.eval_batch_size = 256
  if task == "file":
    # Your own examples (ssljax.downstream.file_task): one CSV / TSV / JSONL file or a glob of them.
    c.data_path = config_dict.placeholder(str)
    c.text_field = "text"
    c.text_b_field = ""  # a second text column: a sentence-pair task
    c.label_field = "label"  # class names, mapped to ids in sorted order
    # None: carved out of data_path's rows by a hash of their text (data.file_splits).
    c.validation_path = config_dict.placeholder(str)
    c.test_path = config_dict.placeholder(str)
  if task == "squad":
    c.seq_len, c.max_question_len, c.doc_stride = 384, 64, 128  # BERT's SQuAD settings
    c.epochs, c.lrs = 2.0, (5e-5, 1e-4)
  trainer_part(c)
  c.lock()
  return c


def trainer_part(c: ml_collections.ConfigDict) -> None:
  """The trainer's keys of a fine-tuning run. Those that the keys above already say are linked to
  them (one value under two names: setting either sets both): the batch, AdamW's weight decay,
  clipping, the schedule and its warm-up, the data dir."""
  c.draw = 0  # the label draw this run trains on (0 .. draws - 1 under a label budget, else 0)
  c.data.name = c.task
  c.data.data_dir = c.get_ref("data_dir")
  c.data.train_split, c.data.eval_split, c.data.test_split = "train", "validation", "test"

  # BERT's fine-tuning AdamW (appendix A.3): beta2 0.999, eps 1e-6, decay on the matrices only.
  c.optim.name, c.optim.lr_scaling = "adamw", "none"
  c.optim.lr = c.lrs[-1]  # one run trains with one rate; `ssljax finetune` tries each of lrs
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-6
  c.optim.weight_decay = c.get_ref("weight_decay")
  c.optim.clip_norm = c.get_ref("clip_norm")
  c.optim.schedule = c.get_ref("schedule")
  c.optim.warmup_fraction = c.get_ref("warmup_fraction")

  c.train.batch_size = c.get_ref("batch_size")
  c.train.steps = 300  # `ssljax finetune` sets a trial's steps from epochs, min_steps and its labelled examples
  # One checkpoint per run: `ssljax finetune` keeps a run per trial (BERT-base: 1.3 GB each).
  c.train.log_every, c.train.checkpoint_every, c.train.keep_checkpoints = 10, 100, 1
  c.eval.batch_size = c.get_ref("eval_batch_size")
  # The task's metrics on the validation or test examples (at most max_eval_examples): what
  # `ssljax eval` and the end of a run report, and what `ssljax finetune` scores each trial by.
  c.evals.task_metrics = evaluators.options("task_metrics", max_examples=c.get_ref("max_eval_examples"))
