import asyncio
async def f(i):
    await asyncio.sleep(0.01 * (3 - i))
    return i * i
async def main():
    return await asyncio.gather(*(f(i) for i in range(3)))
print(asyncio.run(main()))
