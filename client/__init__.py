"""`kexlab client`: one KXP session from the terminal (messages, stdin, prompt, file upload)."""
