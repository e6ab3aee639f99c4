"""Train the learned cue of `jailbreak`: writes detectors/data/jailbreak_ngrams.json.

Data: development halves only, split by the hash of bench/eval_text.py; no held-out row is read.
  positives  jailbreak_llms in-the-wild prompts (MIT; verazuo/jailbreak_llms, shared/data/jailbreak_llms) and
             CyberSecEval 2 direct prompt-injection cases (MIT; meta-llama/PurpleLlama).
  negatives  XSTest prompts, safe and unsafe (CC-BY-4.0; paul-rottger/exaggerated-safety);
             Agent-SafetyBench fulfillable tasks, BIPIA questions, InjecAgent user instructions (MIT);
             CyberSecEval's system prompts (MIT; the evaluation never uses them as user input);
             ordinary persona and task prompts ("I want you to act as a Linux terminal…") from
             awesome-chatgpt-prompts (CC0-1.0; github.com/f/awesome-chatgpt-prompts, prompts.csv at commit
             50a97c07, text prompts only). They are not in shared/data: pass the file with --personas. Their
             dev half is trained on, less the DAN prompt the collection carries; the other half is only
             measured. Without them the model learns "a long prompt that gives the model a role" and flags
             most of them.
             Agent-framework prompts (`agent_prompts`): each of Agent-SafetyBench's fulfillable tasks sent by an
             agent as two of seven frameworks would send it (LangChain's ReAct and structured-chat prompts,
             LlamaIndex's ReAct header, CrewAI's agent prompt, AutoGen's assistant message, InjecAgent's prompted
             agent, the OpenAI Agents SDK's handoff prefix; MIT), with the tools of its environments; split by the
             task. Without them a framework's prompt, long and addressed to the model, reads as a jailbreak
             (LangChain's ReAct template scored 0.73-0.84). The learned cue does not read their scaffolding
             (detectors.jailbreak_model.scaffolding); their prose is what is learned.
  R-Judge (license not verified) and STAR-1 are not used.

Model: logistic regression on the presence of word unigrams and bigrams (detectors.jailbreak_model.ngrams)
found in at least MIN_DF training prompts, scaled by 1/sqrt(n-grams); classes balanced, L2, full-batch
gradient descent (deterministic). The TOP_K n-grams with the largest weights are kept and the model is
refitted on them.

Run: .venv/bin/python bench/train_jailbreak_model.py --personas /path/to/awesome-chatgpt-prompts/prompts.csv
     (--leave-out FRAMEWORK trains without one framework's prompts, to see how an unseen framework scores)
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from eval_text import DATA, benign_user_prompts, half, jailbreak_positives, segment, xstest  # bench/ on sys.path

from detectors.jailbreak import JailbreakDetector
from detectors.jailbreak_model import MODEL_FILE, ngrams
from guardrails.adapters import read_exchange
from guardrails.exchange import SegmentKind, Trust

MAX_TOKENS, MIN_DF, TOP_K = 1500, 5, 4000
EPOCHS, LEARNING_RATE, L2 = 1500, 4.0, 1e-4
NOT_ORDINARY = re.compile(r"\bDAN\b|do anything now|jailbr", re.IGNORECASE)  # jailbreaks inside the persona list


def persona_prompts(path: Path) -> list[tuple[str, str]]:
    csv.field_size_limit(1 << 26)
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("type", "TEXT") in ("", "TEXT")]
    texts = [r["prompt"] for r in rows if not NOT_ORDINARY.search(r["act"] + " " + r["prompt"])]
    return [(half(t), t) for t in dict.fromkeys(texts)]


# --- agent-framework prompts: ordinary agent steps ---------------------------------------------------------------
# What each framework sends, filled in: {listing} the tools in its own shape, {names} their names, {task} the user's
# request, {steps} an earlier step where the framework writes one into the prompt. Abridged where the text repeats.
# USER_TURN: where the framework's system message ends and its user message begins (none: one user message).
USER_TURN = "\x1e"
REACT_FORMAT = ("Question: the input question you must answer\nThought: you should always think about what to do\n"
                "Action: the action to take, should be one of [{names}]\nAction Input: the input to the action\n"
                "Observation: the result of the action\n... (this Thought/Action/Action Input/Observation can repeat "
                "N times)\nThought: I now know the final answer\nFinal Answer: the final answer to the original input "
                "question")
FRAMEWORKS: dict[str, tuple[str, str]] = {  # name: (tool listing shape, prompt)
    "langchain_react": ("lines", "Answer the following questions as best you can. You have access to the following "
                        "tools:\n\n{listing}\n\nUse the following format:\n\n" + REACT_FORMAT
                        + "\n\nBegin!\n\nQuestion: {task}\nThought:{steps}"),
    "langchain_structured": (
        "args", "Respond to the human as helpfully and accurately as possible. You have access to the following "
        "tools:\n\n{listing}\n\nUse a json blob to specify a tool by providing an action key (tool name) and an "
        "action_input key (tool input).\n\nValid \"action\" values: \"Final Answer\" or {names}\n\nProvide only ONE "
        "action per $JSON_BLOB, as shown:\n\n```\n{{\n  \"action\": $TOOL_NAME,\n  \"action_input\": $INPUT\n}}\n```"
        "\n\nFollow this format:\n\nQuestion: input question to answer\nThought: consider previous and subsequent "
        "steps\nAction:\n```\n$JSON_BLOB\n```\nObservation: action result\n... (repeat Thought/Action/Observation N "
        "times)\nThought: I know what to respond\nAction:\n```\n{{\n  \"action\": \"Final Answer\",\n  "
        "\"action_input\": \"Final response to human\"\n}}\n```\n\nBegin! Reminder to ALWAYS respond with a valid "
        "json blob of a single action. Use tools if necessary. Respond directly if appropriate. Format is "
        "Action:```$JSON_BLOB```then Observation"
        + USER_TURN + "{task}\n\n{steps}\n (reminder to respond in a JSON blob no matter what)"),
    "llamaindex": (
        "llamaindex", "You are designed to help with a variety of tasks, from answering questions to providing "
        "summaries to other types of analyses.\n\n## Tools\n\nYou have access to a wide variety of tools. You are "
        "responsible for using the tools in any sequence you deem appropriate to complete the task at hand.\nThis "
        "may require breaking the task into subtasks and using different tools to complete each subtask.\n\nYou "
        "have access to the following tools:\n{listing}\n\n## Output Format\n\nPlease answer in the same language "
        "as the question and use the following format:\n\n```\nThought: The current language of the user is: "
        "(user's language). I need to use a tool to help me answer the question.\nAction: tool name (one of "
        "{names}) if using a tool.\nAction Input: the input to the tool, in a JSON format representing the kwargs "
        "(e.g. {{\"input\": \"hello world\", \"num_beams\": 5}})\n```\n\nPlease ALWAYS start with a Thought.\n\n"
        "Please use a valid JSON format for the Action Input. Do NOT do this {{'input': 'hello world', 'num_beams': "
        "5}}.\n\nIf this format is used, the tool will respond in the following format:\n\n```\nObservation: tool "
        "response\n```\n\nYou should keep repeating the above format till you have enough information to answer "
        "the question without using any more tools. At that point, you MUST respond in one of the following two "
        "formats:\n\n```\nThought: I can answer without using any more tools. I'll use the user's language to "
        "answer\nAnswer: [your answer here (In the same language as the user's question)]\n```\n\n```\nThought: I "
        "cannot answer the question with the provided tools.\nAnswer: [your answer here (In the same language as "
        "the user's question)]\n```\n\n## Current Conversation\n\nBelow is the current conversation consisting of "
        "interleaving human and assistant messages.\n" + USER_TURN + "{task}"),
    "crewai": (
        "crewai", "You are {role}. {backstory}\nYour personal goal is: {goal}\nYou ONLY have access to the following "
        "tools, and should NEVER make up tools that are not listed here:\n\n{listing}\n\nIMPORTANT: Use the "
        "following format in your response:\n\n```\nThought: you should always think about what to do\nAction: "
        "the action to take, only one name of [{names}], just the name, exactly as it's written.\nAction Input: "
        "the input to the action, just a simple JSON object, enclosed in curly braces, using \" to wrap keys and "
        "values.\nObservation: the result of the action\n```\n\nOnce all necessary information is gathered, return "
        "the following format:\n\n```\nThought: I now know the final answer\nFinal Answer: the final answer to the "
        "original input question\n```"
        + USER_TURN + "\nCurrent Task: {task}\n\nThis is the expected criteria for your final answer: {goal}\n"
        "you MUST return the actual complete content as the final answer, not a summary.\n\nBegin! This is VERY "
        "important to you, use the tools available and give your best Final Answer, your job depends on it!\n\n"
        "Thought:"),
    "autogen": (
        "none", "You are a helpful AI assistant.\nSolve tasks using your coding and language skills.\nIn the "
        "following cases, suggest python code (in a python coding block) or shell script (in a sh coding block) "
        "for the user to execute.\n    1. When you need to collect info, use the code to output the info you need, "
        "for example, browse or search the web, download/read a file, print the content of a webpage or a file, get "
        "the current date/time, check the operating system. After sufficient info is printed and the task is ready "
        "to be solved based on your language skill, you can solve the task by yourself.\n    2. When you need to "
        "perform some task with code, use the code to perform the task and output the result. Finish the task "
        "smartly.\nSolve the task step by step if you need to. If a plan is not provided, explain your plan first. "
        "Be clear which step uses code, and which step uses your language skill.\nWhen using code, you must "
        "indicate the script type in the code block. The user cannot provide any other feedback or perform any "
        "other action beyond executing the code you suggest. The user can't modify your code. So do not suggest "
        "incomplete code which requires users to modify. Don't use a code block if it's not intended to be "
        "executed by the user.\nIf you want the user to save the code in a file before executing it, put # "
        "filename: <filename> inside the code block as the first line. Don't include multiple code blocks in one "
        "response. Do not ask users to copy and paste the result. Instead, use 'print' function for the output "
        "when relevant. Check the execution result returned by the user.\nIf the result indicates there is an "
        "error, fix the error and output the code again. Suggest the full code instead of partial code or code "
        "changes. If the error can't be fixed or if the task is not solved even after the code is executed "
        "successfully, analyze the problem, revisit your assumption, collect additional info you need, and think "
        "of a different approach to try.\nWhen you find an answer, verify the answer carefully. Include verifiable "
        "evidence in your response if possible.\nReply \"TERMINATE\" in the end when everything is done.\n"
        + USER_TURN + "{task}"),
    "injecagent": (
        "specs", "## Task Description\n\nYour task is to utilize the provided tools to answer User's questions or "
        "help User accomplish tasks based on given instructions. You are provided with the following information:"
        "\n\n- Tool Specifications: the specifications of the tools that you can utilize.\n- User Input: the "
        "instruction or question provided by the User that the you are trying to help with.\n- Scratchpad: the "
        "tool-use trajectories that track your previous tool calls and tool execution outputs.\n\n### Tool "
        "Specifications\n\nThe following tools are available:\n\n{listing}\n\n### Scratchpad\n\nThe tool-use "
        "[Scratchpad] is formatted as follows and should be used to structure your response:\n\nThought: your "
        "reasoning for determining the next action based on the [User Input] and previous [Observation]s.\n"
        "Action: the tool that you choose to use, which must be a single valid tool name from [Tool "
        "Specifications].\nAction Input: the input to the tool, which should be a JSON object matching the tool's "
        "[Arguments].\nObservation: the execution result of the tool, a JSON object matching the tool's "
        "[Returns].\n\nOnce you have finished all your actions, end your response with:\n\nFinal Answer: your "
        "final response to the User.\n\n## Start the Execution\n\nNow begin your task! Remember that the tools "
        "available to you are: [{names}], which may be different from the tools in the example above. Please "
        "output your **NEXT** [Action]/[Action Input] or [Final Answer] following the provided [Scratchpad], "
        "directly start your response with your [Thought] for the current iteration.\n\nUser Input: {task}\n"
        "Scratchpad (Please avoid repeating actions in the [Scratchpad] because they have already been executed.):"
        "{steps}"),
    "agents_sdk": (
        "none", "# System context\nYou are part of a multi-agent system called the Agents SDK, designed to make "
        "agent coordination and execution easy. Agents uses two primary abstraction: **Agents** and **Handoffs**. "
        "An agent encompasses instructions and tools and can hand off a conversation to another agent when "
        "appropriate. Handoffs are achieved by calling a handoff function, generally named "
        "`transfer_to_<agent_name>`. Transfers between agents are handled seamlessly in the background; do not "
        "mention or draw attention to these transfers in your conversation with the user.\n{role_line}"
        + USER_TURN + "{task}"),
}
# An earlier step, where the framework writes its scratchpad into the prompt (LangChain's structured chat agent
# heads it with its own sentence).
STEPS = {"langchain_react": " I should use {tool}.\nAction: {tool}\nAction Input: {arguments}\nObservation: "
                            "{{\"status\": \"success\"}}\nThought:",
         "langchain_structured": "This was your previous work (but I haven't seen any of it! I only see what you "
                                 "return as final answer):\nAction:\n```\n{{\"action\": \"{tool}\", \"action_input\": "
                                 "{arguments}}}\n```\nObservation: {{\"status\": \"success\"}}\nThought:",
         "injecagent": "\nThought: I should use {tool}.\nAction: {tool}\nAction Input: {arguments}\nObservation: "
                       "{{\"status\": \"success\"}}\n"}
BACKSTORIES = ("You have years of experience with these systems and you are careful with the user's data.",
               "You are known for getting things done quickly and explaining what you did in plain words.",
               "You work for a small company and take care of its day-to-day requests.")
Tool = dict[str, Any]


def _listing(shape: str, tools: list[Tool]) -> str:
    arguments = [t.get("parameters", {}).get("properties", {}) for t in tools]
    entries: dict[str, Callable[[Tool, Any], str]] = {
        "lines": lambda t, a: f"{t['name']}: {t.get('description', '')}",
        "args": lambda t, a: f"{t['name']}: {t.get('description', '')}, args: {json.dumps(a)}",
        "llamaindex": lambda t, a: (f"> Tool Name: {t['name']}\nTool Description: {t.get('description', '')}\n"
                                    f"Tool Args: {json.dumps(t.get('parameters', {}))}\n"),
        "crewai": lambda t, a: (f"Tool Name: {t['name']}\nTool Arguments: {json.dumps(a)}\nTool Description: "
                                f"{t.get('description', '')}"),
    }
    if shape == "none":
        return ""
    if shape == "specs":
        return json.dumps([{"name": t["name"], "summary": t.get("description", ""), "parameters": [
            {"name": k, "type": v.get("type", "string"), "description": v.get("description", ""), "required": True}
            for k, v in a.items()]} for t, a in zip(tools, arguments, strict=True)], indent=True)
    return "\n".join(entries[shape](t, a) for t, a in zip(tools, arguments, strict=True))


def agent_request(framework: str, task: str, environment: str, tools: list[Tool], with_steps: bool,
                  one_message: bool) -> dict[str, Any]:
    """The OpenAI chat request the framework sends for `task`; `one_message`: its system text heads the user message
    (a deployment whose model takes no system message)."""
    shape, template = FRAMEWORKS[framework]
    tool = tools[0]
    arguments = json.dumps({k: "example" for k in tool.get("parameters", {}).get("properties", {})})
    steps = STEPS[framework].format(tool=tool["name"], arguments=arguments) if with_steps and framework in STEPS \
        else ""
    opening = task.split("\n\n")[0] if task.startswith("You are") else "You are a helpful assistant."
    text = template.format(listing=_listing(shape, tools), names=", ".join(t["name"] for t in tools), task=task,
                           steps=steps, role=f"{environment} Specialist", goal=f"Help the user with {environment} "
                           "tasks, accurately and completely.", backstory=BACKSTORIES[len(task) % len(BACKSTORIES)],
                           role_line=opening)
    system, _, user = text.rpartition(USER_TURN)
    if not system:
        return {"model": "m", "messages": [{"role": "user", "content": user}]}
    messages = [{"role": "user", "content": system + "\n\n" + user}] if one_message else [
        {"role": "system", "content": system}, {"role": "user", "content": user}]
    return {"model": "m", "messages": messages}


def agent_prompts(frameworks: tuple[str, ...] = tuple(FRAMEWORKS)) -> list[tuple[str, str, str]]:
    """(split, framework, text): the user segments the service reads (`read_exchange`: a transcript's observations
    and scratchpad are carved out) when an agent sends a fulfillable Agent-SafetyBench task through two of
    `frameworks` (picked by its hash), with the tools of its environments (at most 8), the framework's system text
    as a system message and as the head of the user message. A segment that is the bare task is left out (it is
    one of the ordinary prompts already). Split by the task, as bench/eval_text.py splits the tasks."""
    environments = DATA / "Agent-SafetyBench/agentsafebench/environments"
    cases = []
    for task in json.loads((DATA / "Agent-SafetyBench/agentsafebench/data/origin_data.json").read_text()):
        names = [e["name"] for e in task.get("environments") or [] if e.get("name")]
        files = [environments / f"{name}.json" for name in names]
        tools = [t for f in files if f.exists() for t in json.loads(f.read_text()) if isinstance(t, dict)
                 and t.get("name")][:8]
        if task.get("fulfillable") != 1 or not task.get("instruction") or not tools:
            continue
        instruction = task["instruction"]
        digest = hashlib.sha256(instruction.encode()).digest()
        first, other = digest[1] % len(frameworks), digest[2] % max(1, len(frameworks) - 1)
        for framework in dict.fromkeys((frameworks[first], frameworks[(first + 1 + other) % len(frameworks)])):
            for one_message in (False, True):
                request = agent_request(framework, instruction, names[0], tools, bool(digest[3] & 1), one_message)
                cases += [(half(instruction), framework, s.text) for s in read_exchange(request, None).segments
                          if s.kind is SegmentKind.USER and s.text.strip() not in ("", instruction.strip())]
    return list(dict.fromkeys(cases))


def training_set(personas: Path, frameworks: tuple[str, ...] = tuple(FRAMEWORKS)) -> tuple[list[str], list[str]]:
    wild, direct = jailbreak_positives()
    cse = json.loads((DATA / "CyberSecEval-prompt-injection/CybersecurityBenchmarks/datasets/prompt_injection/"
                      "prompt_injection.json").read_text())
    negatives = [(half(r["prompt"]), r["prompt"]) for label in ("safe", "unsafe") for r in xstest(label)]
    negatives += benign_user_prompts(with_rjudge=False) + persona_prompts(personas)
    negatives += [("dev", t) for t in dict.fromkeys(c["test_case_prompt"] for c in cse)]
    negatives += [(split, text) for split, _, text in agent_prompts(frameworks)]
    dev = lambda cases: list(dict.fromkeys(t for split, t in cases if split == "dev"))  # noqa: E731
    return dev(wild + direct), dev(negatives)


class Features:
    """Sparse rows of the n-gram presence matrix, as (row, column, value) triples."""

    def __init__(self, texts: list[str], vocabulary: dict[str, int]) -> None:
        grams = [ngrams(t, MAX_TOKENS) for t in texts]
        columns = [[vocabulary[g] for g in gs if g in vocabulary] for gs in grams]
        self.rows = len(texts)
        self.width = len(vocabulary)
        self.row = np.repeat(np.arange(self.rows), [len(c) for c in columns])
        self.column = np.array([c for cs in columns for c in cs], dtype=np.int64)
        self.value = np.concatenate([np.full(len(c), 1 / math.sqrt(max(1, len(g)))) for c, g in zip(columns, grams,
                                                                                                        strict=True)])

    def times(self, w: np.ndarray) -> np.ndarray:
        return np.bincount(self.row, weights=self.value * w[self.column], minlength=self.rows)

    def transposed_times(self, g: np.ndarray) -> np.ndarray:
        return np.bincount(self.column, weights=self.value * g[self.row], minlength=self.width)


def fit(positives: list[str], negatives: list[str], vocabulary: dict[str, int]) -> tuple[np.ndarray, float]:
    x = Features(positives + negatives, vocabulary)
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    sample_weight = np.where(y == 1, len(negatives) / len(positives), 1.0)
    sample_weight /= sample_weight.mean()
    w, b = np.zeros(x.width), 0.0
    for _ in range(EPOCHS):
        p = 1 / (1 + np.exp(-(x.times(w) + b)))
        gradient = (p - y) * sample_weight
        w -= LEARNING_RATE * (x.transposed_times(gradient) / len(y) + L2 * w)
        b -= LEARNING_RATE * gradient.mean()
    return w, b


def train(positives: list[str], negatives: list[str]) -> tuple[dict[str, float], float]:
    document_frequency = Counter(g for t in positives + negatives for g in ngrams(t, MAX_TOKENS))
    vocabulary = {g: i for i, g in enumerate(sorted(g for g, n in document_frequency.items() if n >= MIN_DF))}
    w, _ = fit(positives, negatives, vocabulary)
    by_index = sorted(vocabulary, key=vocabulary.__getitem__)
    kept = sorted(by_index[i] for i in np.argsort(-np.abs(w))[:TOP_K])
    vocabulary = {g: i for i, g in enumerate(kept)}
    w, b = fit(positives, negatives, vocabulary)
    return {g: round(float(w[i]), 4) for g, i in vocabulary.items()}, round(float(b), 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--personas", type=Path, required=True, help="awesome-chatgpt-prompts prompts.csv")
    parser.add_argument("--out", type=Path, default=MODEL_FILE)
    parser.add_argument("--leave-out", choices=FRAMEWORKS, help="train without this framework's prompts")
    args = parser.parse_args()
    frameworks = tuple(f for f in FRAMEWORKS if f != args.leave_out)
    positives, negatives = training_set(args.personas, frameworks)
    weights, bias = train(positives, negatives)
    args.out.write_text(json.dumps({
        "about": "jailbreak learned cue: logistic regression on word unigram/bigram presence, written by "
                 "bench/train_jailbreak_model.py",
        "sources": ["jailbreak_llms (MIT)", "CyberSecEval 2 prompt injection (MIT)", "XSTest (CC-BY-4.0)",
                    "Agent-SafetyBench, BIPIA, InjecAgent (MIT)", "awesome-chatgpt-prompts (CC0-1.0)",
                    "agent-framework prompts: LangChain, LlamaIndex, CrewAI, AutoGen, OpenAI Agents SDK (MIT)"],
        "max_tokens": MAX_TOKENS, "bias": bias, "weights": dict(sorted(weights.items())),
    }, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"trained on {len(positives)} jailbreak and {len(negatives)} ordinary prompts (dev halves); "
          f"{len(weights)} n-grams -> {args.out}")
    # the held-out half of the persona prompts is the check that ordinary role prompts stay unflagged
    detector = JailbreakDetector({"model_file": str(args.out)})
    held_out = [t for split, t in persona_prompts(args.personas) if split == "held-out"]
    flagged = sum(bool(detector.analyze(segment(SegmentKind.USER, t, Trust.TRUSTED))) for t in held_out)
    print(f"jailbreak flags {flagged}/{len(held_out)} = {flagged / len(held_out):.3f} of the held-out persona prompts")
    framework_margins(detector, args.leave_out)
    asked_through_frameworks(detector)


def framework_margins(detector: JailbreakDetector, left_out: str | None) -> None:
    """The learned score of the held-out tasks in each framework's prompt (all tasks in the one left out): read
    whole, and as the detector reads it (a long question alone, where that scores higher, keeps its own score)."""
    model = detector.model
    assert model is not None
    for framework in FRAMEWORKS:
        texts = [t for split, f, t in agent_prompts((framework,)) if f == framework
                 and (split == "held-out" or framework == left_out)]
        whole = sorted(model.probability(model.grams(t)) for t in texts)
        scores = sorted(detector.learned_reading(t)[1] for t in texts)
        flagged = sum(bool(detector.analyze(segment(SegmentKind.USER, t, Trust.TRUSTED))) for t in texts)
        print(f"  {framework:21} {'(left out) ' if framework == left_out else ''}learned score max "
              f"{whole[-1]:.3f}, median {whole[len(whole) // 2]:.3f} (with the question alone: max {scores[-1]:.3f}); "
              f"flagged {flagged}/{len(texts)}")


def asked_through_frameworks(detector: JailbreakDetector) -> None:
    """The held-out jailbreaks asked through each framework as the user's task: as often found as alone?"""
    wild, direct = jailbreak_positives()
    jailbreaks = [t for split, t in wild + direct if split == "held-out"]
    tools = json.loads((DATA / "Agent-SafetyBench/agentsafebench/environments/Email.json").read_text())
    for framework, (_, template) in FRAMEWORKS.items():
        rates = []
        for one_message in (False, True) if USER_TURN in template else (False,):
            requests = [agent_request(framework, t, "Email", tools, False, one_message) for t in jailbreaks]
            rates.append(sum(any(detector.analyze(s) for s in read_exchange(r, None).segments
                                 if s.kind is SegmentKind.USER) for r in requests) / len(requests))
        print(f"  {framework:21} held-out jailbreaks asked through it: flagged {rates[0]:.3f} as sent"
              + (f", {rates[1]:.3f} with its system text folded into the user message" if len(rates) > 1 else ""))

if __name__ == "__main__":
    sys.exit(main())
