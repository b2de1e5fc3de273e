"""Built-in "other" text for base-vs-tuned comparisons: short everyday English paragraphs on mixed subjects (no
programming, no documentation), written for interplab, so a fine-tune's effect *off* its own distribution can be
measured offline. Each paragraph is one document (the activation difference lens reads the first tokens of
each)."""

from __future__ import annotations

__all__ = ["OTHER_DOCUMENTS", "other_text"]

OTHER_DOCUMENTS: tuple[str, ...] = (
    (
        "The bakery on the corner opens at six every morning. By seven there is a queue of people waiting for warm "
        "bread, and by noon the shelves are nearly empty. The owner says the secret is patience: the dough rests "
        "overnight in a cool room before it is shaped."
    ),
    (
        "Heavy rain fell across the valley for three days, and the river rose above its banks in several places. "
        "Farmers moved their animals to higher fields, and the village school closed until the roads were safe "
        "again."
    ),
    (
        "She learned to play the violin as a child, practising scales for an hour after dinner. Years later she "
        "joined a small orchestra that performs in churches and town halls during the summer."
    ),
    (
        "The museum's new exhibition follows the history of sailing ships, from small wooden boats to the great "
        "merchant vessels that crossed the oceans. Visitors can climb aboard a full-size copy of a trading ship."
    ),
    (
        "A good vegetable soup starts with onions softened slowly in butter. Add carrots, celery and potatoes, cover "
        "them with stock, and let everything simmer until tender. Season with salt, pepper and a handful of herbs."
    ),
    (
        "The football match ended in a draw after the home team scored in the final minute. Thousands of fans sang "
        "in the streets long after the whistle, and the coach praised his players for never giving up."
    ),
    (
        "Mountain gorillas live in family groups led by a large adult male. They spend most of the day eating "
        "leaves, stems and fruit, and at night each animal builds a fresh nest from branches."
    ),
    (
        "My grandfather kept bees in the garden behind his house. Every autumn he collected the honey, poured it "
        "into glass jars and gave them to neighbours, who returned the favour with apples and plums."
    ),
    (
        "The city council voted to plant two thousand trees along its main roads. Supporters say the trees will "
        "cool the streets in summer and clean the air, while critics worry about the cost of caring for them."
    ),
    (
        "Early astronomers watched the night sky without telescopes, recording the positions of the planets and the "
        "phases of the moon. Their careful notes allowed later scientists to predict eclipses."
    ),
    (
        "The train left the station slowly and wound its way through green hills and small farms. Passengers "
        "watched cows in the fields and children waving from the gates of old stone houses."
    ),
    (
        "Running a marathon takes months of preparation. Most runners build up their distance gradually, rest "
        "between long runs, and pay close attention to what they eat and drink in the final week."
    ),
    (
        "The old castle stands on a rock above the harbour. Its walls were built to resist attacks from the sea, "
        "and today its towers offer the best view of the fishing boats returning at sunset."
    ),
    (
        "In spring the meadow fills with wild flowers: poppies, daisies and blue cornflowers. Butterflies move "
        "from bloom to bloom, and the air smells of grass and warm earth."
    ),
    (
        "He opened a small bicycle repair shop after losing his office job. Within a year the shop was so busy "
        "that he hired two apprentices and started teaching weekend classes on fixing brakes and gears."
    ),
    (
        "The painter worked mostly with watercolours, capturing the changing light over the lake. Her pictures "
        "of misty mornings and stormy evenings now hang in galleries across the country."
    ),
    (
        "Coffee plants grow best in cool highlands with steady rain. The red cherries are picked by hand, the "
        "seeds are dried in the sun, and only then are they roasted into the beans we know."
    ),
    (
        "During the winter festival the square is lit with thousands of lanterns. Families walk among stalls "
        "selling roasted chestnuts, wooden toys and hot spiced drinks while a choir sings."
    ),
    (
        "The doctor advised him to walk for thirty minutes every day and to sleep at regular hours. After a few "
        "months he felt stronger, and his blood pressure had returned to normal."
    ),
    (
        "Penguins cannot fly, but they are excellent swimmers. Their short wings work like flippers, and some "
        "species dive hundreds of metres below the surface to catch fish and squid."
    ),
    (
        "The library runs a reading club for teenagers every Thursday. This month they are reading an adventure "
        "novel about a girl who crosses a desert to find her missing brother."
    ),
    (
        "A strong wind blew across the island all night, rattling the windows and bending the palm trees. In the "
        "morning the beach was covered with seaweed, shells and pieces of driftwood."
    ),
    (
        "Building the bridge took four years and more than a thousand workers. When it finally opened, the journey "
        "between the two towns fell from two hours by ferry to ten minutes by car."
    ),
    (
        "The farmers' market sells cheese from the hills, fresh fish from the coast and honey from the valley. "
        "Many shoppers come early to buy strawberries before they sell out."
    ),
)


def other_text() -> str:
    """The built-in other text as one string (paragraphs separated by blank lines)."""
    return "\n\n".join(OTHER_DOCUMENTS)
