"""Dialog-flow administration: the YAML an administrator may edit (prompts, responses, rules, stories, NLU data,
catalogs), its validation, the revision store, and the apply pipeline (stage → validate → train → test → swap).

    tree = FlowTree(REPO_ROOT)                      # the live flow files
    edit = Edit("dialogs/domain.yml", text, base)   # base = sha256 of the file the editor started from
    problems = validate_tree(candidate_root)        # syntax, schema, cross references, catalogs
"""
