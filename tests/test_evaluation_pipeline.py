"""The evaluation pipeline end to end with a fake generator: tasks, prompts, resume, outputs, compare, CLI."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
from conftest import require_shared

from langbridge.evaluation import (
    DataNotFoundError,
    GenerationRequest,
    LoglikelihoodRequest,
    PromptStyle,
    compare,
    evaluate,
    get_task,
    read_predictions,
)
from langbridge.evaluation.bwrap import bwrap_problem
from langbridge.evaluation.cli import add_parsers
from langbridge.evaluation.data import DataSource


class FakeBackend:
    """Answers with a function of the request; counts what it was asked."""

    kind = "fake"

    def __init__(self, answer=None, loglik=None, instruct: bool = True, name: str = "fake-model"):
        self.name = name
        self.answer = answer or (lambda req: "I do not know.")
        self.loglik = loglik or (lambda req: -float(len(req.continuation)))
        self.instruct = instruct
        self.generated: list[GenerationRequest] = []
        self.scored: list[LoglikelihoodRequest] = []
        self.calls = 0

    def prompt_style(self, style: str = "auto", instruction_template: str | None = None) -> PromptStyle:
        instruct = self.instruct if style == "auto" else style == "instruct"
        return PromptStyle(instruct=instruct, chat=lambda user: f"<user>{user}</user><assistant>")

    def generate(self, requests):
        self.calls += 1
        self.generated += list(requests)
        return [self.answer(r) for r in requests]

    def loglikelihood(self, requests):
        self.calls += 1
        self.scored += list(requests)
        return [self.loglik(r) for r in requests]

    def config(self):
        return {"name": self.name, "kind": self.kind}


MGSM_ROWS = {
    "en": [
        ("Tom has 3 apples and buys 2. How many?", "5"),
        ("A box holds 1,200 pens. Half are red?", "600"),
        ("Sam runs 4 km a day for 7 days. Total?", "28"),
    ],
    "sw": [("Juma ana machungwa 3 na ananunua 2. Ngapi?", "5"), ("Sanduku lina kalamu 10. Nusu?", "5")],
}
EXEMPLARS = {
    "en": {
        "1": {"q": "Question: What is 1 + 1?", "a": "Step-by-Step Answer: 1 + 1 = 2. The answer is 2."},
        "2": {"q": "Question: What is 2 + 2?", "a": "Step-by-Step Answer: 2 + 2 = 4. The answer is 4."},
    },
    "sw": {
        "1": {"q": "Swali: 1 + 1 ni ngapi?", "a": "Jibu la Hatua kwa Hatua: 1 + 1 = 2. Jibu ni 2."},
        "2": {"q": "Swali: 2 + 2 ni ngapi?", "a": "Jibu la Hatua kwa Hatua: 2 + 2 = 4. Jibu ni 4."},
    },
}


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "mgsm").mkdir(parents=True)
    for lang, rows in MGSM_ROWS.items():
        (root / "mgsm" / f"mgsm_{lang}.tsv").write_text(
            "".join(f"{q}\t{a}\n" for q, a in rows), encoding="utf-8"
        )
    (root / "mgsm" / "mgsm_exemplars.json").write_text(
        json.dumps({"MGSM_EXEMPLARS": EXEMPLARS}), encoding="utf-8"
    )
    xc = root / "xcopa" / "data" / "sw"
    xc.mkdir(parents=True)
    items = [
        {
            "premise": "Mtu alifungua bomba.",
            "choice1": "Choo kilijaa maji.",
            "choice2": "Maji yalitoka.",
            "question": "effect",
            "label": 1,
            "idx": 1,
            "changed": False,
        },
        {
            "premise": "Msichana alipata mdudu.",
            "choice1": "Alimwaga maziwa.",
            "choice2": "Hakula.",
            "question": "effect",
            "label": 1,
            "idx": 2,
            "changed": False,
        },
        {
            "premise": "Mwanamke alikuwa na njaa.",
            "choice1": "Alikula chakula kingi sana.",
            "choice2": "Alilala.",
            "question": "cause",
            "label": 0,
            "idx": 3,
            "changed": False,
        },
    ]
    (xc / "test.sw.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    (xc / "val.sw.jsonl").write_text(json.dumps(items[0]) + "\n", encoding="utf-8")
    return root


def oracle(gold_by_question: dict[str, str], right: set[str]):
    """Answers questions in `right` correctly (with distracting numbers before), the rest wrongly."""

    def answer(req: GenerationRequest) -> str:
        for question, gold in gold_by_question.items():
            if question in req.encoder_text:
                return f"First 7, then 3. So {gold if question in right else '999'}."
        raise AssertionError(f"unexpected prompt {req.encoder_text!r}")

    return answer


def test_mgsm_end_to_end_instruct(tmp_path: Path, data_dir: Path) -> None:
    golds = {q: a for rows in MGSM_ROWS.values() for q, a in rows}
    right = {MGSM_ROWS["en"][0][0], MGSM_ROWS["en"][1][0], MGSM_ROWS["sw"][1][0]}
    backend = FakeBackend(answer=oracle(golds, right))
    out = tmp_path / "out"
    results = evaluate(
        backend, "mgsm", languages="en,sw", data_dir=data_dir, output_dir=out, batch_size=2, progress=False
    )

    entry = results["tasks"]["mgsm"]
    assert entry["scores"] == pytest.approx({"en": 2 / 3, "sw": 1 / 2})
    assert entry["summary"] == pytest.approx({"AVG": (2 / 3 + 1 / 2) / 2, "HRL": 2 / 3, "LRL": 1 / 2})
    assert entry["n"] == {"en": 3, "sw": 2}
    # Instruct style: zero-shot "Question: ..." in the native question word inside the chat template, stopping
    # at the next question word; no exemplars.
    req = backend.generated[0]
    assert req.full_prompt.startswith("<user>") and req.full_prompt.endswith("<assistant>")
    word = "Question:" if req.encoder_text.startswith("Question:") else "Swali:"
    assert req.encoder_text.removeprefix(word + " ") in golds and req.stop == (word,)
    assert {r.encoder_text.split(":")[0] for r in backend.generated} == {"Question", "Swali"}
    # Outputs on disk.
    rows = [json.loads(line) for line in (out / "predictions" / "mgsm.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    row = next(r for r in rows if r["input"]["question"] == MGSM_ROWS["en"][1][0])
    assert row["extracted"] == "600" and row["gold"] == "600" and row["correct"] is True
    assert {"id", "task", "language", "input", "prompt", "output", "extracted", "gold", "correct"} <= set(row)
    saved = json.loads((out / "results.json").read_text())
    assert saved["tasks"]["mgsm"]["scores"] == pytest.approx(entry["scores"])
    assert "timing" in saved and saved["timing"]["mgsm"]["examples"] == 5
    md = (out / "results.md").read_text()
    assert (
        "| Model | en | sw | AVG | HRL | LRL |" in md
        and "| fake-model | 66.7 | 50.0 | 58.3 | 66.7 | 50.0 |" in md
    )


def test_resume_skips_finished_examples(tmp_path: Path, data_dir: Path) -> None:
    golds = {q: a for rows in MGSM_ROWS.values() for q, a in rows}
    out = tmp_path / "out"
    first = FakeBackend(answer=oracle(golds, set(golds)))
    evaluate(first, "mgsm", languages="en", limit=2, data_dir=data_dir, output_dir=out, progress=False)
    assert len(first.generated) == 2
    # Simulate an interrupted write: a torn last line is ignored.
    with open(out / "predictions" / "mgsm.jsonl", "a", encoding="utf-8") as f:
        f.write('{"key": "test/en/00')
    second = FakeBackend(answer=oracle(golds, set(golds)))
    results = evaluate(second, "mgsm", languages="en", data_dir=data_dir, output_dir=out, progress=False)
    assert [r.encoder_text for r in second.generated] == [
        "Question: " + MGSM_ROWS["en"][2][0]
    ]  # only the new one
    assert results["tasks"]["mgsm"]["scores"]["en"] == 1.0
    assert len(read_predictions(out / "predictions" / "mgsm.jsonl")) == 3
    third = FakeBackend(answer=oracle(golds, set()))
    evaluate(third, "mgsm", languages="en", data_dir=data_dir, output_dir=out, progress=False)
    assert third.calls == 0  # everything done

    # A row whose prompt differs from what this code builds (older prompt format) is not silently reused.
    path = out / "predictions" / "mgsm.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["prompt"] = "an older prompt format"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="different prompt"):
        evaluate(FakeBackend(), "mgsm", languages="en", data_dir=data_dir, output_dir=out, progress=False)
    fourth = FakeBackend(answer=oracle(golds, set(golds)))
    evaluate(
        fourth, "mgsm", languages="en", data_dir=data_dir, output_dir=out, progress=False, overwrite=True
    )
    assert len(fourth.generated) == 1 and rows[0]["input"]["question"] in fourth.generated[0].encoder_text


def test_changed_settings_are_not_mixed(tmp_path: Path, data_dir: Path) -> None:
    golds = {q: a for rows in MGSM_ROWS.values() for q, a in rows}
    out = tmp_path / "out"
    evaluate(
        FakeBackend(answer=oracle(golds, set())),
        "mgsm",
        languages="en",
        data_dir=data_dir,
        output_dir=out,
        progress=False,
    )
    other = FakeBackend(answer=oracle(golds, set(golds)), name="another-model")
    with pytest.raises(ValueError, match="other settings or another model"):
        evaluate(other, "mgsm", languages="en", data_dir=data_dir, output_dir=out, progress=False)
    results = evaluate(
        other, "mgsm", languages="en", data_dir=data_dir, output_dir=out, progress=False, overwrite=True
    )
    assert results["tasks"]["mgsm"]["scores"]["en"] == 1.0 and len(other.generated) == 3


def test_mgsm_base_style_few_shot_prompt(tmp_path: Path, data_dir: Path) -> None:
    backend = FakeBackend(answer=lambda r: " 1 + 4 = 5. Jibu ni 5.\n\nSwali: extra", instruct=False)
    results = evaluate(backend, "mgsm", languages="sw", data_dir=data_dir, num_fewshot=1, progress=False)
    req = backend.generated[0]
    q = MGSM_ROWS["sw"][0][0] if MGSM_ROWS["sw"][0][0] in req.full_prompt else MGSM_ROWS["sw"][1][0]
    assert req.full_prompt == (
        "Swali: 1 + 1 ni ngapi?\nJibu la Hatua kwa Hatua: 1 + 1 = 2. Jibu ni 2.\n\n"
        f"Swali: {q}\nJibu la Hatua kwa Hatua:"
    )
    assert req.encoder_text == req.full_prompt  # a LangBridge encoder reads the whole few-shot prompt
    assert set(req.stop) == {"\n\n", "Swali:"}
    assert results["tasks"]["mgsm"]["scores"]["sw"] == 1.0


def test_xcopa_loglikelihood_pipeline(tmp_path: Path, data_dir: Path) -> None:
    # Shorter continuation = higher score: picks choice2, choice2, choice2 -> labels 1, 1, 0.
    backend = FakeBackend()
    results = evaluate(
        backend, "xcopa", languages="sw", data_dir=data_dir, output_dir=tmp_path / "o", progress=False
    )
    assert results["tasks"]["xcopa"]["scores"]["sw"] == pytest.approx(2 / 3)
    first = [r for r in backend.scored if r.context.startswith("Mtu")]
    assert [r.context for r in first] == ["Mtu alifungua bomba kwa hiyo"] * 2
    assert [r.continuation for r in first] == [" choo kilijaa maji.", " maji yalitoka."]
    cause = next(r for r in backend.scored if r.context.startswith("Mwanamke"))
    assert cause.context == "Mwanamke alikuwa na njaa kwa sababu"
    rows = read_predictions(tmp_path / "o" / "predictions" / "xcopa.jsonl")
    assert len(rows) == 3 and all(len(r["output"]) == 2 for r in rows.values())
    val = evaluate(backend, "xcopa", languages="sw", split="val", data_dir=data_dir, progress=False)
    assert val["tasks"]["xcopa[val]"]["n"] == {"sw": 1}


def test_missing_data_error_says_where(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match=r"mgsm/mgsm_te\.tsv") as err:
        evaluate(FakeBackend(), "mgsm", languages="te", data_dir=empty, allow_hub=False, progress=False)
    assert "--data-dir" in str(err.value)
    with pytest.raises(DataNotFoundError, match="test_Swahili.json"):
        get_task("msvamp").load(DataSource.create(empty, allow_hub=False), "sw", "test")
    with pytest.raises(DataNotFoundError, match="input_en, options_en, input_bn, options_bn, target_en"):
        get_task("bbh-bn").load(DataSource.create(empty, allow_hub=False), "bn", "test")


def test_unknown_task_and_language() -> None:
    with pytest.raises(KeyError, match="available: bbh"):
        get_task("gsm9k")
    with pytest.raises(ValueError, match="not in any selected task"):
        evaluate(FakeBackend(), "mgsm", languages="xx", progress=False)


def test_msvamp_local_directory(tmp_path: Path, data_dir: Path) -> None:
    folder = tmp_path / "mSVAMP"
    folder.mkdir()
    records = [
        {"m_query": "Swali la kwanza 2 + 3?", "response": 5.0, "query": "First 2 + 3?"},
        {"m_query": "Swali la pili 10 / 4?", "response": "2.5", "query": "Second?"},
    ]
    (folder / "test_Swahili.json").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    backend = FakeBackend(answer=lambda r: "It is 5" if "kwanza" in r.encoder_text else "It is 2.50")
    results = evaluate(
        backend, "msvamp", languages="sw", data_dir=data_dir, task_dirs={"msvamp": folder}, progress=False
    )
    assert results["tasks"]["msvamp"]["scores"]["sw"] == 1.0


def test_bbh_bn_local_csv(tmp_path: Path) -> None:
    import csv

    from langbridge.evaluation.tasks.bbh import BBH_BN_COLUMNS, BBH_BN_TASKS

    folder = tmp_path / "bbh_bn"
    folder.mkdir()
    for name in BBH_BN_TASKS:
        # The original folder names this one file without the -en-bn suffix.
        file_name = "date_understanding.csv" if name == "date_understanding" else f"{name}-en-bn.csv"
        with open(folder / file_name, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=BBH_BN_COLUMNS)
            writer.writeheader()
            writer.writerow(
                {
                    "input_en": f"Q {name}?",
                    "options_en": "Options:\n(A) x\n(B) y",
                    "input_bn": f"প্রশ্ন {name}?",
                    "options_bn": "বিকল্প:\n(A) x\n(B) y",
                    "target_en": "(B)",
                }
            )
    answers = {
        n: ("###Final answer: (B)" if i % 2 == 0 else "So the answer is (A).")
        for i, n in enumerate(BBH_BN_TASKS)
    }
    backend = FakeBackend(answer=lambda r: next(a for n, a in answers.items() if f" {n}?" in r.encoder_text))
    results = evaluate(backend, "bbh-bn", task_dirs={"bbh_bn": folder}, data_dir=tmp_path, progress=False)
    entry = results["tasks"]["bbh-bn"]
    assert entry["scores"] == pytest.approx({"en": 0.5, "bn": 0.5})
    assert entry["summary"]["LRL"] == pytest.approx(0.5) and entry["low_resource"] == ["bn"]
    assert "প্রশ্ন" in next(r.encoder_text for r in backend.generated if "প্রশ্ন" in r.encoder_text)
    assert all(r.encoder_text.endswith("\nStep-by-step answer:") for r in backend.generated)
    base = FakeBackend(answer=lambda r: "B. maybe", instruct=False)
    results = evaluate(
        base, "bbh-bn", languages="bn", task_dirs={"bbh_bn": folder}, data_dir=tmp_path, progress=False
    )
    assert all(r.encoder_text.endswith("\nAnswer:") for r in base.generated)
    assert results["tasks"]["bbh-bn"]["scores"] == {"bn": 1.0}


def test_bbh_with_shared_data(tmp_path: Path) -> None:
    root = require_shared("bbh").parent
    # Answers the gold of each question by looking it up, except for word_sorting.
    golds = {}
    for path in (root / "bbh" / "bbh").glob("*.json"):
        for ex in json.loads(path.read_text())["examples"][:2]:
            golds[ex["input"]] = (path.stem, ex["target"])

    def answer(req: GenerationRequest) -> str:
        question = req.full_prompt.rsplit("\n\nQ: ", 1)[1].split("\nA: Let's think step by step.")[0]
        task, gold = golds[question]
        return (
            f" Some reasoning. So the answer is {'nothing' if task == 'word_sorting' else gold}.\n\nQ: next"
        )

    backend = FakeBackend(answer=answer, instruct=False)
    results = evaluate(backend, "bbh", limit=2, data_dir=root, progress=False)  # 2 per subtask
    entry = results["tasks"]["bbh"]
    assert len(entry["subtasks"]["en"]) == 27
    assert entry["subtasks"]["en"]["word_sorting"] == 0.0
    assert entry["scores"]["en"] == pytest.approx(26 / 27)
    req = backend.generated[0]
    assert req.full_prompt.count("\n\nQ: ") == 3 + 1 - req.full_prompt.startswith(
        "Q: "
    )  # 3 exemplars + question
    assert "canary" not in req.full_prompt and req.stop == ("\n\nQ:", "\n\n")


def test_shared_loaders_read_original_layouts() -> None:
    root = require_shared("mgsm").parent
    source = DataSource.create(root, allow_hub=False)
    bn = get_task("mgsm").load(source, "bn", "test")
    assert len(bn) == 250 and bn[0].gold == "18"
    shots = get_task("mgsm").fewshot(source, "zh")
    assert len(shots) == 8 and shots[0]["q"].startswith("问题：")
    xc = get_task("xcopa").load(source, "qu", "val")
    assert len(xc) == 100 and xc[0].gold in (0, 1)
    he = get_task("humaneval").load(source, "en", "test")
    assert len(he) == 164 and he[0].meta["entry_point"] == "has_close_elements"
    mt = get_task("humaneval-mt").load(source, "bn_anon", "test")
    assert len(mt) == 164 and mt[0].meta["entry_point"] == "func"


def _write_humaneval(folder: Path) -> None:
    problems = [
        {
            "task_id": "T/0",
            "prompt": 'def add(a, b):\n    """Add two numbers."""\n',
            "entry_point": "add",
            "canonical_solution": "    return a + b\n",
            "test": "def check(f):\n    assert f(2, 3) == 5\n",
        },
        {
            "task_id": "T/1",
            "prompt": 'def neg(a):\n    """Negate."""\n',
            "entry_point": "neg",
            "canonical_solution": "    return -a\n",
            "test": "def check(f):\n    assert f(2) == -2\n",
        },
    ]
    folder.mkdir(parents=True)
    (folder / "HumanEval.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))


@pytest.mark.skipif(
    bwrap_problem() is not None, reason="bubblewrap sandbox unavailable; apt-get install bubblewrap"
)
def test_humaneval_greedy_and_sampled_pass_at_k(tmp_path: Path) -> None:
    _write_humaneval(tmp_path / "humaneval")
    body = {"add": "\n    return a + b", "neg": "\n    return a"}  # neg is wrong

    def answer(req: GenerationRequest) -> str:
        name = re.match(r"def (\w+)", req.full_prompt).group(1)
        return body[name] + "\n\n\ndef extra():\n    pass\n"  # cut at the stop sequence "\ndef"

    backend = FakeBackend(answer=answer, instruct=True)
    results = evaluate(backend, "humaneval", data_dir=tmp_path, output_dir=tmp_path / "o", progress=False)
    assert results["tasks"]["humaneval"]["scores"]["en"] == 0.5
    assert backend.generated[0].do_sample is False
    assert backend.generated[0].full_prompt.endswith(
        '"""'
    )  # stripped, completion-style even for instruct LMs
    rows = read_predictions(tmp_path / "o" / "predictions" / "humaneval.jsonl")
    assert rows["test/en/T/0"]["extracted"] == "\n    return a + b\n\n"
    assert rows["test/en/T/1"]["detail"]["status"] == "failed"

    # Sampling: 4 samples per problem, 2 of neg's samples right -> pass@1 = (1 + 0.5) / 2.
    counter = {"neg": 0}

    def sampled(req: GenerationRequest) -> str:
        name = re.match(r"def (\w+)", req.full_prompt).group(1)
        if name == "neg":
            counter["neg"] += 1
            return "\n    return -a" if counter["neg"] % 2 else "\n    return a"
        return body[name]

    backend = FakeBackend(answer=sampled)
    results = evaluate(
        backend, "humaneval", data_dir=tmp_path, num_samples=4, pass_k=(1, 2, 10), progress=False
    )
    entry = results["tasks"]["humaneval"]
    assert all(r.do_sample and r.temperature == 0.8 for r in backend.generated)
    assert entry["pass_at_k"]["en"]["pass@1"] == pytest.approx(0.75)
    assert entry["pass_at_k"]["en"]["pass@2"] == pytest.approx((1 + (1 - 1 / 6)) / 2)
    assert "pass@10" not in entry["pass_at_k"]["en"]  # needs at least 10 samples


def test_compare_shows_deltas(tmp_path: Path, data_dir: Path) -> None:
    golds = {q: a for rows in MGSM_ROWS.values() for q, a in rows}
    base = evaluate(
        FakeBackend(answer=oracle(golds, {MGSM_ROWS["en"][0][0]}), name="LM"),
        "mgsm",
        languages="en,sw",
        data_dir=data_dir,
        output_dir=tmp_path / "lm",
        progress=False,
    )
    assert base["tasks"]["mgsm"]["scores"]["sw"] == 0.0
    evaluate(
        FakeBackend(answer=oracle(golds, set(golds)), name="LM+LangBridge"),
        "mgsm",
        languages="en,sw",
        data_dir=data_dir,
        output_dir=tmp_path / "lb",
        progress=False,
    )
    table = compare([tmp_path / "lm" / "results.json", tmp_path / "lb"])
    lines = table.splitlines()
    assert "| Model | en | sw | AVG | HRL | LRL |" in lines
    assert "| LM | 33.3 | 0.0 | 16.7 | 33.3 | 0.0 |" in lines
    assert (
        "| LM+LangBridge | 100.0 (+66.7) | 100.0 (+100.0) | 100.0 (+83.3) | 100.0 (+66.7) | 100.0 (+100.0) |"
        in lines
    )
    with pytest.raises(FileNotFoundError, match="no results file"):
        compare([tmp_path / "nothing.json"])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="langbridge")
    add_parsers(parser.add_subparsers(dest="command"))
    return parser


def test_cli_compare_and_errors(tmp_path: Path, data_dir: Path, capsys) -> None:
    golds = {q: a for rows in MGSM_ROWS.values() for q, a in rows}
    for name, right in (("a", set()), ("b", set(golds))):
        evaluate(
            FakeBackend(answer=oracle(golds, right), name=name),
            "mgsm",
            languages="en",
            data_dir=data_dir,
            output_dir=tmp_path / name,
            progress=False,
        )
    args = _parser().parse_args(
        [
            "compare",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--labels",
            "LM,LB",
            "--output",
            str(tmp_path / "cmp.md"),
        ]
    )
    assert args.func(args) == 0
    assert "| LB | 100.0 (+100.0) |" in capsys.readouterr().out
    assert "| LM | 0.0 |" in (tmp_path / "cmp.md").read_text()

    args = _parser().parse_args(["eval", str(tmp_path / "no-such-model"), "--tasks", "mgsm"])
    assert args.func(args) == 1
    assert "no-such-model: no such directory" in capsys.readouterr().err
    args = _parser().parse_args(["eval", "--list-tasks"])
    assert args.func(args) == 0
    assert "humaneval-mt" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _parser().parse_args(["eval", "m", "--task-dir", "msvamp"])


def test_a_new_task_is_a_small_registered_definition(tmp_path: Path) -> None:
    from langbridge.evaluation import (
        Example,
        Task,
        available_tasks,
        extract_last_number,
        make_generation,
        numbers_equal,
        register_task,
    )
    from langbridge.evaluation.registry import TASKS

    def my_math() -> Task:
        return Task(
            name="test-my-math",
            kind="generate",
            languages=("en", "sw"),
            low_resource={"sw"},
            load=lambda source, lang, split: [
                Example(id=str(i), language=lang, input={"q": f"{i}+3?"}, gold=str(i + 3)) for i in range(2)
            ],
            build=lambda ex, style, options, shots: make_generation(style, ex.input["q"], max_new_tokens=8),
            extract=lambda output, ex: extract_last_number(output),
            score=lambda answer, ex: numbers_equal(answer, ex.gold),
        )

    register_task(my_math)
    try:
        assert "test-my-math" in available_tasks()
        with pytest.raises(ValueError, match="already registered"):
            register_task(my_math)  # a second, different definition under the same name
        backend = FakeBackend(answer=lambda r: "4" if r.encoder_text.startswith("1+") else "0")
        results = evaluate(backend, "test-my-math", output_dir=tmp_path / "out", progress=False)
        entry = results["tasks"]["test-my-math"]
        assert entry["scores"] == {"en": 0.5, "sw": 0.5} and entry["summary"]["LRL"] == 0.5
    finally:
        TASKS.pop("test-my-math", None)


def test_batches_are_sorted_by_the_backends_token_count(tmp_path: Path, data_dir: Path) -> None:
    """Batches are formed longest-first by what the model reads (tokens), not by characters."""

    class TokenCounting(FakeBackend):
        def request_length(self, request) -> int:
            # Pretend Swahili needs many more tokens per character than English.
            return len(request.full_prompt) * (10 if "Swali" in request.full_prompt else 1)

    golds = {q: a for rows in MGSM_ROWS.values() for q, a in rows}
    backend = TokenCounting(answer=oracle(golds, set(golds)))
    evaluate(backend, "mgsm", languages="en,sw", batch_size=2, data_dir=data_dir, progress=False)
    assert [r.encoder_text.startswith("Swali") for r in backend.generated] == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert backend.calls == 3  # 5 examples in batches of 2, languages mixed
