"""The comparison machinery behind every exercise checker.

An exercise asks the reader to write a function; its checker runs the reader's function and
the reference implementation on the same named cases (ordinary inputs and edge cases) and
compares the outputs. On the first case where they differ it raises ``AssertionError`` naming
the case, the largest absolute difference and both shapes; when every case matches it prints
one line, ``✓ all N cases match``.

:func:`check_function` is the general tool. Each exercise of the book has a named checker
(``check_<exercise>(fn)``) that builds its own cases and calls it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "Case",
    "check_function",
    "NOT_IMPLEMENTED",
    "not_implemented_error",
    "require_answer",
]

#: The words every checker's message starts with when the reader's function is still a stub.
NOT_IMPLEMENTED = "not implemented yet"


def not_implemented_error(
    case: str, exc: BaseException | None = None, what: str = "your function"
) -> AssertionError:
    """The ``AssertionError`` a checker raises when the reader's answer is still a stub.

    A function that raises ``NotImplementedError`` (the exercise notebooks' stubs do), or an
    answer left as ``NotImplemented``, has not been written yet; the message says so, rather
    than reporting a crash. ``case`` names the case being checked, ``what`` the answer.
    """
    detail = f" ({exc})" if exc is not None and str(exc) else ""
    return AssertionError(
        f"case {case!r}: {NOT_IMPLEMENTED}: {what} raised NotImplementedError{detail}. "
        "Replace the `raise NotImplementedError` with your code, then run this cell again."
        if exc is not None
        else f"case {case!r}: {NOT_IMPLEMENTED}: {what} is still NotImplemented. "
        "Replace it with your answer, then run this cell again."
    )


def require_answer(value: Any, case: str, what: str = "your answer") -> None:
    """Raise :func:`not_implemented_error` when an answer that is data is still a stub.

    The exercise notebooks leave an answer that is data (``NAME: type``) as ``NotImplemented``.
    """
    if value is NotImplemented or value is Ellipsis:
        raise not_implemented_error(case, None, what)


#: A named case: ``(name, args, kwargs)`` passed as ``fn(*args, **kwargs)``.
Case = tuple[str, tuple, dict]


def _clone(value: Any) -> Any:
    """Deep-copy tensors inside ``value``, so neither function can change the other's inputs."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_clone(v) for v in value)
    if isinstance(value, list):
        return [_clone(v) for v in value]
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def _shape(value: Any) -> str:
    if isinstance(value, Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (int, float, bool)):
        return "scalar"
    return type(value).__name__


def _mismatch(got: Any, expected: Any, where: str, atol: float, rtol: float) -> str | None:
    """A description of the first difference between ``got`` and ``expected``, or None."""
    label = f"output{where}"
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping) or set(got) != set(expected):
            keys = sorted(map(str, got)) if isinstance(got, Mapping) else type(got).__name__
            return f"{label}: expected a dict with keys {sorted(map(str, expected))}, got {keys}"
        for key in expected:
            found = _mismatch(got[key], expected[key], f"{where}[{key!r}]", atol, rtol)
            if found:
                return found
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            length = len(got) if isinstance(got, (tuple, list)) else type(got).__name__
            return f"{label}: expected a sequence of {len(expected)} values, got {length}"
        for index, (g, e) in enumerate(zip(got, expected, strict=True)):
            found = _mismatch(g, e, f"{where}[{index}]", atol, rtol)
            if found:
                return found
        return None
    if expected is None:
        return None if got is None else f"{label}: expected None, got {type(got).__name__}"
    if not isinstance(expected, (Tensor, int, float, bool)):
        return None if got == expected else f"{label}: expected {expected!r}, got {got!r}"
    if not isinstance(got, (Tensor, int, float, bool)):
        return f"{label}: expected a tensor or number, got {type(got).__name__}"
    exp_t = torch.as_tensor(expected).detach().cpu()
    got_t = torch.as_tensor(got).detach().cpu()
    shapes = f"shapes: yours {_shape(got)}, expected {_shape(expected)}"
    if exp_t.shape != got_t.shape:
        if exp_t.numel() == 1 and got_t.numel() == 1:  # 0-d tensor vs float, (1,) vs ()
            exp_t, got_t = exp_t.reshape(()), got_t.reshape(())
        else:
            return f"{label} has the wrong shape; {shapes}"
    if exp_t.dtype == torch.bool or got_t.dtype == torch.bool:
        if exp_t.dtype != got_t.dtype:
            return f"{label}: expected dtype {exp_t.dtype}, got {got_t.dtype}; {shapes}"
        wrong = int((exp_t != got_t).sum())
        return None if wrong == 0 else f"{label}: {wrong} entries differ; {shapes}"
    exp_f, got_f = exp_t.double(), got_t.double()
    both_nan = exp_f.isnan() & got_f.isnan()
    diff = (got_f - exp_f).abs().masked_fill(both_nan, 0.0)
    diff = diff.masked_fill(exp_f.isinf() & (got_f == exp_f), 0.0)
    bad = diff.isnan() | (diff > atol + rtol * exp_f.abs().nan_to_num(0.0, 0.0, 0.0))
    if not bad.any():
        return None
    worst = math.nan if diff.isnan().any() else float(diff.max())
    if bad.ndim:
        first = tuple(int(i) for i in bad.nonzero()[0])
        values = f"first at index {first}: yours {got_f[first].item():.6g}, "
    else:
        first = ()
        values = f"yours {got_f.item():.6g}, "
    values += f"expected {exp_f[first].item():.6g}"
    return (
        f"{label} differs: max abs difference {worst:.3g} ({values}; atol {atol:g}, "
        f"rtol {rtol:g}); {shapes}"
    )


def check_function(
    reader_fn: Callable[..., Any],
    reference_fn: Callable[..., Any],
    cases: Sequence[Case],
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Run ``reader_fn`` and ``reference_fn`` on every case and compare their outputs.

    Each case is ``(name, args, kwargs)``; both functions get their own copy of the inputs.
    Outputs may be tensors, numbers, ``None``, or tuples, lists and dicts of them; tensors
    must have the same shape (a number and a one-element tensor compare equal) and agree
    within ``atol + rtol * |expected|`` elementwise (NaN matches NaN; bool tensors must be
    equal).

    Raises:
        AssertionError: naming the first case on which the outputs differ (or on which
            ``reader_fn`` raised), with the largest absolute difference and both shapes. A
            ``reader_fn`` that raises ``NotImplementedError`` gets a message saying the
            exercise is not implemented yet.
        ValueError: if ``cases`` is empty or a case is not ``(str, tuple, dict)``.

    On success prints ``✓ all N cases match``.
    """
    if not cases:
        raise ValueError("cases must hold at least one (name, args, kwargs) case, got none")
    for case in cases:
        if (
            not isinstance(case, tuple)
            or len(case) != 3
            or not isinstance(case[0], str)
            or not isinstance(case[1], tuple)
            or not isinstance(case[2], dict)
        ):
            raise ValueError(
                f"each case must be (name: str, args: tuple, kwargs: dict), got {case!r}"
            )
    for name, args, kwargs in cases:
        expected = reference_fn(*_clone(args), **_clone(kwargs))
        try:
            got = reader_fn(*_clone(args), **_clone(kwargs))
        except NotImplementedError as exc:
            raise not_implemented_error(name, exc) from exc
        except Exception as exc:
            raise AssertionError(
                f"case {name!r}: your function raised {type(exc).__name__}: {exc}"
            ) from exc
        problem = _mismatch(got, expected, "", atol, rtol)
        if problem:
            raise AssertionError(f"case {name!r}: {problem}")
    print(f"✓ all {len(cases)} cases match")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
