from hart.cli import main

if __name__ == "__main__":  # spawned export workers import this module too
    raise SystemExit(main())
