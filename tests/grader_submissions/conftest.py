"""These notebooks are submissions for the grader's tests (tests/test_grader.py), some of them hostile
(an endless loop, a memory bomb, os._exit): nbval must never run them as notebooks."""
collect_ignore_glob = ["*.ipynb"]
