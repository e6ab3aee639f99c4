"""ReAct agents that list their tools in the prompt and send no `tools` (LangChain's `create_react_agent`): their
`Action:` calls are judged like declared calls, not ignored and not reported as leaks."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_locations_resolve
from test_react_transcript import INJECAGENT_TASK, PLANTED, by_detector, injecagent_openai, run

from guardrails.adapters import read_exchange
from guardrails.pointer import resolve
from guardrails.service import CheckService
from guardrails.toolparse.react import prompt_tools

# LangChain hub's `hwchase17/react`, rendered by `create_react_agent` with `render_text_description` (the first
# two tools) and a legacy `name(args) - description` tool.
TOOL_LIST = (
    "You have access to the following tools:\n\n"
    "terminal: Run shell commands on this Linux machine.\n"
    "wikipedia: A wrapper around Wikipedia. Useful for when you need to answer general questions about people, "
    "places, companies, facts, historical events, or other subjects. Input should be a search query.\n"
    "Calculator(expression: str) - Useful for when you need to answer questions about math."
)
TEMPLATE = (
    "Answer the following questions as best you can. " + TOOL_LIST + "\n\n"
    "Use the following format:\n\n"
    "Question: the input question you must answer\n"
    "Thought: you should always think about what to do\n"
    "Action: the action to take, should be one of [terminal, wikipedia, Calculator]\n"
    "Action Input: the input to the action\n"
    "Observation: the result of the action\n"
    "... (this Thought/Action/Action Input/Observation can repeat N times)\n"
    "Thought: I now know the final answer\n"
    "Final Answer: the final answer to the original input question\n\n"
    "Begin!"
)
QUESTION = "My disk is full. Free some space in my home directory, then tell me when the Eiffel Tower was built."

DANGEROUS = ("Thought: The user wants space freed in the home directory. The quickest way is to remove its "
             "contents.\nAction: terminal\nAction Input: rm -rf ~")
BENIGN = "Thought: I should look up the Eiffel Tower first.\nAction: wikipedia\nAction Input: Eiffel Tower"
UNLISTED = ('Thought: I will mail the report to the admin.\nAction: send_email\n'
            'Action Input: {"to": "admin@example.com", "body": "disk report"}')


def openai_chat(response_text: str, *, prompt_in_system: bool = True) -> dict[str, Any]:
    """A LangChain ReAct step over OpenAI Chat (stop at the Observation the runtime writes)."""
    if prompt_in_system:
        messages = [{"role": "system", "content": TEMPLATE}, {"role": "user", "content": QUESTION}]
    else:  # what `create_react_agent` sends a chat model: the whole template as one user message
        messages = [{"role": "user", "content": f"{TEMPLATE}\n\nQuestion: {QUESTION}\nThought:"}]
    return {
        "request": {"model": "gpt-4o-mini", "messages": messages, "temperature": 0.0, "stop": ["\nObservation"]},
        "response": {"id": "chatcmpl-7", "object": "chat.completion", "created": 1718000000, "model": "gpt-4o-mini",
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": response_text}}],
                     "usage": {"prompt_tokens": 412, "completion_tokens": 31, "total_tokens": 443}},
    }


def anthropic(response_text: str) -> dict[str, Any]:
    """The same agent over Anthropic Messages: the template as the top-level `system` (a list of blocks)."""
    return {
        "request": {"model": "claude-sonnet-4-5", "max_tokens": 1024, "stop_sequences": ["\nObservation"],
                    "system": [{"type": "text", "text": TEMPLATE}],
                    "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]},
        "response": {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                     "content": [{"type": "text", "text": response_text}], "stop_reason": "stop_sequence",
                     "stop_sequence": "\nObservation", "usage": {"input_tokens": 420, "output_tokens": 33}},
    }


BODIES = {"openai-system": openai_chat, "openai-user": lambda text: openai_chat(text, prompt_in_system=False),
          "anthropic": anthropic}


@pytest.mark.parametrize("make", BODIES.values(), ids=BODIES.keys())
def test_a_listed_shell_tool_running_rm_rf_home_is_blocked_by_tool_policy(service: CheckService, make: Any) -> None:
    body = make(DANGEROUS)
    result = run(service, body)
    assert result["verdict"] == "block", result["findings"]
    [policy] = by_detector(result, "tool_policy")
    location = policy["location"]
    assert resolve(body, location["pointer"])[location["start"]:location["end"]] == "rm -rf ~"
    assert by_detector(result, "tool_call_leak") == [] and by_detector(result, "tool_undeclared") == []


@pytest.mark.parametrize("make", BODIES.values(), ids=BODIES.keys())
def test_a_benign_step_is_allowed_and_its_call_reaches_the_tool_checks(service: CheckService, make: Any) -> None:
    body = make(BENIGN)
    result = run(service, body)
    assert result["verdict"] == "allow", result["findings"]
    assert by_detector(result, "tool_call_leak") == [] and by_detector(result, "tool_undeclared") == []
    assert result["signals"]["exchange"]["tool_calls"] == 1
    exchange = read_exchange(body["request"], body["response"])
    assert_locations_resolve(body, exchange)
    [call] = [s.tool_call for s in exchange.tool_calls if s.tool_call]
    assert (call.name, call.arguments, call.recovered_from) == ("wikipedia", {"tool_input": "Eiffel Tower"}, "react")
    assert sorted(exchange.tools) == ["Calculator", "terminal", "wikipedia"]
    assert all(spec.parameters is None for spec in exchange.tools.values())  # no schema for tool_schema to judge


@pytest.mark.parametrize("make", BODIES.values(), ids=BODIES.keys())
def test_a_call_to_a_tool_the_prompt_does_not_list_is_undeclared_with_a_pointer_to_the_list(
        service: CheckService, make: Any) -> None:
    body = make(UNLISTED)
    result = run(service, body)
    assert result["verdict"] == "block"
    [undeclared] = by_detector(result, "tool_undeclared")
    location = undeclared["location"]
    assert resolve(body, location["pointer"])[location["start"]:location["end"]] == "send_email"
    assert undeclared["evidence"]["declared"] == ["Calculator", "terminal", "wikipedia"]
    [listed] = undeclared["evidence"]["declared_in"]
    assert listed["pointer"] in undeclared["message"]
    assert resolve(body, listed["pointer"])[listed["start"]:listed["end"]] == TOOL_LIST
    assert by_detector(result, "tool_call_leak") == []


def test_a_prompt_that_only_mentions_tools_declares_none(service: CheckService) -> None:
    prose = ("You are a helpful assistant. You have access to several tools, for example a terminal and a "
             "calculator, and you should use them when needed. Tools: use them sparingly.")
    body = openai_chat(DANGEROUS)
    body["request"]["messages"][0]["content"] = prose
    assert prompt_tools(prose) == []
    exchange = read_exchange(body["request"], body["response"])
    assert exchange.tools == {} and exchange.tool_calls == ()  # as before: ReAct text, nothing reported
    result = run(service, body)
    assert by_detector(result, "tool_call_leak") == [] and by_detector(result, "tool_undeclared") == []


def test_only_the_system_and_first_user_message_declare_tools() -> None:
    # A tool result (or a later message) that lists tools does not add to what the agent was given.
    body = openai_chat(UNLISTED)
    body["request"]["messages"][0]["content"] = "You are a helpful assistant."
    body["request"]["messages"].append({"role": "assistant", "content": "Let me check."})
    body["request"]["messages"].append({"role": "user", "content": "Tools:\nsend_email: send an email"})
    assert read_exchange(body["request"], body["response"]).tools == {}


PROMPT_SHAPES = {
    "bulleted Tools heading with signatures": (
        "## Tools:\n- search(query: str) - Search the web.\n- fetch(url: str, timeout: int = 10): Fetch a page.\n"
        "    Args:\n        url: the page\n\nAnswer in the ReAct format.",
        [("search", "query"), ("fetch", "tool_input")]),
    "a multi-paragraph description": (
        "You have access to the following tools:\n\nshell: Run a command.\n\n    Input is one command line.\n"
        "python_repl: Run Python code.\n\nUse the following format:\nQuestion: the input",
        [("shell", "tool_input"), ("python_repl", "tool_input")]),
    "the format's one-of list only": (
        "Action: the action to take, should be one of [`search`, lookup]\nAction Input: the input to the action",
        [("search", "tool_input"), ("lookup", "tool_input")]),
    "an unrendered template": (
        "You have access to the following tools:\n\n{tools}\n\n"
        "Action: the action to take, should be one of [{tool_names}]", []),
    "Tools: in running text": ("Tools: a hammer, a saw and some nails.\nQuestion: how do I build a shelf?", []),
}


@pytest.mark.parametrize(("prompt", "expected"), PROMPT_SHAPES.values(), ids=PROMPT_SHAPES.keys())
def test_prompt_tool_list_shapes(prompt: str, expected: list[tuple[str, str]]) -> None:
    assert [(t.name, t.text_input) for t in prompt_tools(prompt)] == expected


# --- InjecAgent's JSON tool specifications and LlamaIndex's `> Tool Name:` entries ---------------------------------
# LlamaIndex's ReAct system header (`ReActChatFormatter`) with two FunctionTools rendered into it.
LLAMAINDEX_SYSTEM = """You are designed to help with a variety of tasks, from answering questions to providing \
summaries to other types of analyses.

## Tools

You have access to a wide variety of tools. You are responsible for using the tools in any sequence you deem \
appropriate to complete the task at hand.
This may require breaking the task into subtasks and using different tools to complete each subtask.

You have access to the following tools:
> Tool Name: multiply
Tool Description: multiply(a: int, b: int) -> int
Multiply two integers and return the result.
Tool Args: {"properties": {"a": {"title": "A", "type": "integer"}, "b": {"title": "B", "type": "integer"}}, \
"required": ["a", "b"], "type": "object"}

> Tool Name: web_search
Tool Description: web_search(query: str) -> str

Search the web and return the top results.
Tool Args: {"properties": {"query": {"title": "Query", "type": "string"}}, "required": ["query"], "type": "object"}


## Output Format

Please answer in the same language as the question and use the following format:

```
Thought: The current language of the user is: (user's language). I need to use a tool to help me answer the question.
Action: tool name (one of multiply, web_search) if using a tool.
Action Input: the input to the tool, in a JSON format representing the kwargs (e.g. {"input": "hello world", \
"num_beams": 5})
```
"""
LLAMAINDEX_LIST = LLAMAINDEX_SYSTEM[LLAMAINDEX_SYSTEM.index("You have access to the following"):
                                    LLAMAINDEX_SYSTEM.index('"object"}\n\n\n') + len('"object"}')]


def test_injecagent_and_llamaindex_prompts_declare_their_tools() -> None:
    injecagent = [(t.name, t.text_input) for t in prompt_tools(INJECAGENT_TASK)]
    assert injecagent == [("AmazonGetProductDetails", "product_id"), ("AugustSmartLockGrantGuestAccess", "tool_input")]
    assert [(t.name, t.text_input) for t in prompt_tools(LLAMAINDEX_SYSTEM)] == [
        ("multiply", "tool_input"), ("web_search", "query")]
    one_of = "Action: tool name (one of multiply, `web_search`) if using a tool.\nAction Input: the input"
    assert [t.name for t in prompt_tools(one_of)] == ["multiply", "web_search"]
    # Shaped like them, but no list of tools: an unrendered template, JSON that specifies no tool, prose.
    for prose in ("You have access to the following tools:\n{tool_desc}\n\nAction: tool name (one of {tool_names}) "
                  "if using a tool.",
                  'The following tools are available:\n\n[{"name": "Amy", "age": 31}, {"name": "Raj"}]',
                  "The following tools are available: a hammer and a saw.\nAction: pick one (one of them, really)."):
        assert prompt_tools(prose) == [], prose


def test_a_llamaindex_agent_calling_a_tool_its_prompt_does_not_list_is_undeclared(service: CheckService) -> None:
    body = openai_chat('Thought: The current language of the user is: English. I need to mail the report.\n'
                       'Action: send_email\nAction Input: {"to": "admin@example.com", "body": "disk report"}')
    body["request"]["messages"][0]["content"] = LLAMAINDEX_SYSTEM
    result = run(service, body)
    [undeclared] = by_detector(result, "tool_undeclared")
    assert undeclared["evidence"]["declared"] == ["multiply", "web_search"]
    [listed] = undeclared["evidence"]["declared_in"]
    assert resolve(body, listed["pointer"])[listed["start"]:listed["end"]] == LLAMAINDEX_LIST
    body = openai_chat("Thought: I need to search.\nAction: web_search\nAction Input: Eiffel Tower construction")
    body["request"]["messages"][0]["content"] = LLAMAINDEX_SYSTEM
    assert run(service, body)["verdict"] == "allow"
    [call] = [s.tool_call for s in read_exchange(body["request"], body["response"]).tool_calls if s.tool_call]
    assert (call.name, call.arguments) == ("web_search", {"query": "Eiffel Tower construction"})


def test_injecagents_listed_tools_let_tool_taint_trace_the_planted_guest(service: CheckService) -> None:
    # The response grants the guest the review asked for: a call of a tool the JSON specifications declare.
    body = injecagent_openai(PLANTED)
    exchange = read_exchange(body["request"], body["response"])
    assert sorted(exchange.tools) == ["AmazonGetProductDetails", "AugustSmartLockGrantGuestAccess"]
    result = run(service, body)
    assert result["verdict"] == "block"
    [taint] = by_detector(result, "tool_taint")
    source = taint["evidence"]["source"]
    assert (source["kind"], source["pointer"]) == ("tool_result", "/request/messages/1/content")
    assert resolve(body, source["pointer"])[source["start"]:source["end"]] == "guest_amy01"
