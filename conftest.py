"""Root conftest: loaded for every pytest run in this repository, whether it collects
``tests/`` or a chapter notebook (``pytest --nbmake book/intro/01_running_saes.ipynb``).

It puts ``tests/`` and ``book/_ext`` on ``sys.path`` and loads the chapter plugin,
``tests/chapter_runner.py`` (nbmake executes the chapters; see its docstring).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
for folder in (ROOT / "book" / "_ext", ROOT / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

pytest_plugins = ["chapter_runner"]
