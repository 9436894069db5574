"""``python -m s2former_plugin.train -opt options/X.yml`` — the explicit twin of ``python -m basicsr.train``.

Same arguments (``--auto_resume``, ``--launcher pytorch``, ``--force_yml`` ...); outputs go under the working
directory. Useful where the startup hook is not active (e.g. ``python -S``).
"""

from s2former_plugin import register


def main() -> None:
    register()
    from s2former_plugin.compat import train_main

    train_main()


if __name__ == '__main__':
    main()
