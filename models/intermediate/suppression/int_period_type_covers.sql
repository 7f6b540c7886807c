{#- The period-type pairs whose sums int_suppression_equations lists: (finer, coarser) where
    the finer type rolls into the coarser one and no third type lies between them on the way.

    A type Z lies between X and T when every period of X rolls into the T that its Z rolls
    into (months lie between weeks and quarters: a week's quarter is its month's quarter;
    ISO bi-weeks do not lie between weeks and months, whose boundaries they cross). The sums
    along such a chain imply the direct one (a year is the sum of its quarters, each the sum
    of its months), and when every sum of the chain has none or at least two masked cells,
    so has the direct one: a lone masked week would need its month masked, that month
    another masked cell in its quarter, and so on up to an unmasked total. So the chain is
    enough, and each cell joins a few sums instead of one per coarser type. That holds where
    every total of the chain is itself a cell (pub_indicator_values); int_suppression_equations
    uses it there only. -#}
{{ config(materialized='table') }}

with rollups as (

    select period_id, period_type, target_period_id, target_period_type
    from {{ ref('int_period_rollups') }}
    where target_period_id <> period_id

),

pairs as (

    select period_type, target_period_type, count(*) as periods
    from rollups
    group by 1, 2

),

-- for each (X, Z, T): how many periods of X roll into T through Z, and through Z consistently
through as (

    select
        x_to_z.period_type,
        x_to_z.target_period_type as middle_period_type,
        x_to_t.target_period_type,
        count(*) as periods,
        sum(case when z_to_t.target_period_id = x_to_t.target_period_id then 1 else 0 end)
            as consistent
    from rollups as x_to_z
    join rollups as x_to_t
        on x_to_t.period_id = x_to_z.period_id
        and x_to_t.target_period_type <> x_to_z.target_period_type
    left join rollups as z_to_t
        on z_to_t.period_id = x_to_z.target_period_id
        and z_to_t.target_period_type = x_to_t.target_period_type
    group by 1, 2, 3

)

select p.period_type, p.target_period_type
from pairs as p
where not exists (
    select 1
    from through as t
    join pairs as whole
        on whole.period_type = t.period_type
        and whole.target_period_type = t.target_period_type
    where t.period_type = p.period_type
      and t.target_period_type = p.target_period_type
      and t.consistent = whole.periods
)
