"""`kexlab server`: the asyncio KXP server, its apps (echo, chat) and the file inbox."""
